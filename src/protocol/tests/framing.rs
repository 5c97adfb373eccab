//! Framing: checklist (1)-(5).

use super::*;

/// [MQTT-1.5.5-1] A remaining length of 5 bytes is malformed, detected with the header alone.
#[test]
fn remaining_length_of_5_bytes_is_malformed() {
    assert_eq!(
        code(after_connect(4, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])),
        0x81
    );
    let mut d = Decoder::new(u32::MAX);
    let mut buf = BytesMut::from(CONNECT_V4);
    d.decode(&mut buf).unwrap();
    buf.extend_from_slice(&[0x30, 0x80, 0x80, 0x80, 0x80]);
    assert_eq!(d.decode(&mut buf).unwrap_err().reason_code() as u8, 0x81);
}

/// [MQTT-3.1.2-24] The total size (header included) is checked against the maximum from the
/// fixed header alone, before the body is buffered: 0x95.
#[test]
fn packet_too_large_is_detected_from_the_fixed_header() {
    // 2-byte header announcing 9 bytes: total 11 > 10.
    let mut d = Decoder::new(10);
    let mut buf = BytesMut::from(&[0x10, 0x09][..]);
    let e = d.decode(&mut buf).unwrap_err();
    assert_eq!(e, DecodeError::PacketTooLarge { size: 11, max: 10 });
    assert_eq!(e.reason_code() as u8, 0x95);
    // 5-byte header after CONNECT: 268,435,455 + 5.
    let mut d = Decoder::new(100);
    let mut buf = BytesMut::from(CONNECT_V4);
    d.decode(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    let e = d.decode(&mut buf).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 100
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
}

/// [MQTT-3.1.2-24] A packet of exactly the maximum size is accepted: the limit is inclusive and
/// counts the header.
#[test]
fn packet_of_exactly_max_size_is_accepted() {
    let mut d = Decoder::new(CONNECT_V4.len() as u32);
    let mut buf = BytesMut::from(CONNECT_V4);
    assert!(d.decode(&mut buf).unwrap().is_some());
    let mut d = Decoder::new(CONNECT_V4.len() as u32 - 1);
    let mut buf = BytesMut::from(CONNECT_V4);
    assert!(matches!(
        d.decode(&mut buf),
        Err(DecodeError::PacketTooLarge { .. })
    ));
}

/// [MQTT-3.12] PINGREQ with a body is malformed.
#[test]
fn pingreq_with_a_body_is_malformed() {
    assert_eq!(after_connect(4, &[0xC0, 0x00]).unwrap(), Packet::PingReq);
    assert_eq!(code(after_connect(4, &[0xC0, 0x01, 0])), 0x81);
    assert_eq!(code(after_connect(5, &[0xC0, 0x01, 0])), 0x81);
    assert_eq!(code(after_connect(4, &[0xC1, 0x00])), 0x81);
}

/// [MQTT-2.1.2] Packet type 0 is reserved: malformed.
#[test]
fn packet_type_0_is_malformed() {
    assert_eq!(code(after_connect(4, &[0x00, 0x00])), 0x81);
    assert_eq!(code(after_connect(5, &[0x00, 0x00])), 0x81);
}

/// [MQTT-2.1.2] CONNACK, SUBACK, UNSUBACK and PINGRESP from a client are protocol errors.
#[test]
fn server_only_packets_from_a_client_are_protocol_errors() {
    for v in [4, 5] {
        for byte1 in [0x20u8, 0x90, 0xB0, 0xD0] {
            assert_eq!(
                code(after_connect(v, &[byte1, 0x02, 0, 1])),
                0x82,
                "{byte1:#x}"
            );
        }
        assert_eq!(code(after_connect(v, &[0xD0, 0x00])), 0x82);
    }
}

/// A partial frame returns Ok(None) and leaves the buffer as it was, at every cut point.
#[test]
fn partial_frames_wait_and_leave_the_buffer_intact() {
    for cut in 0..CONNECT_V5.len() {
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&CONNECT_V5[..cut]);
        assert_eq!(d.decode(&mut buf).unwrap(), None, "cut {cut}");
        assert_eq!(&buf[..], &CONNECT_V5[..cut]);
        buf.extend_from_slice(&CONNECT_V5[cut..]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
        assert!(buf.is_empty());
    }
}

/// After an MQTT 3.1 CONNECT the connection speaks 3.1.1 framing.
#[test]
fn mqtt31_connection_decodes_later_packets_as_v311() {
    let mut bytes = connect_bytes(b"MQIsdp", 3, 0x02, &[0, 1, b'x']);
    bytes.extend_from_slice(&[0x32, 0x05, 0, 1, b't', 0, 1, 0xE0, 0x00]);
    let got = decode_all(&bytes).unwrap();
    assert!(matches!(&got[1], Packet::Publish(p) if p.pkid == 1 && p.topic == "t"));
    assert_eq!(got[2], Packet::Disconnect(Disconnect::default()));
    // v3 DISCONNECT rules apply: no body.
    let mut bytes = connect_bytes(b"MQIsdp", 3, 0x02, &[0, 1, b'x']);
    bytes.extend_from_slice(&[0xE0, 0x01, 0x00]);
    assert!(decode_all(&bytes).is_err());
}

/// Several packets in one buffer come out one per call, in order.
#[test]
fn batched_frames_decode_one_at_a_time() {
    let mut d = Decoder::new(1024);
    let mut buf = BytesMut::from(CONNECT_V4);
    buf.extend_from_slice(&[0xC0, 0x00, 0x30, 0x03, 0, 1, b't', 0xE0, 0x00]);
    assert!(matches!(
        d.decode(&mut buf).unwrap(),
        Some(Packet::Connect(_))
    ));
    assert_eq!(buf.len(), 9);
    assert_eq!(d.decode(&mut buf).unwrap(), Some(Packet::PingReq));
    assert_eq!(buf.len(), 7);
    assert!(matches!(d.decode(&mut buf).unwrap(), Some(Packet::Publish(p)) if p.topic == "t"));
    assert_eq!(&buf[..], &[0xE0, 0x00]);
    assert!(matches!(
        d.decode(&mut buf).unwrap(),
        Some(Packet::Disconnect(_))
    ));
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(decode_all(&buf).unwrap(), vec![]);
}
