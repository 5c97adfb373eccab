//! A delivery's compact form: what most lack is out of line, nothing added is lost.

use super::*;

fn link(n: u64) -> Link {
    Link {
        queue: 3,
        id: std::num::NonZeroU64::new(n).unwrap(),
    }
}

/// A mailbox holds one per queued message: the record stays at 32 bytes.
#[test]
fn a_delivery_is_32_bytes() {
    assert_eq!(std::mem::size_of::<Delivery>(), 32);
}

#[test]
fn subscription_identifiers_keep_their_order_past_the_inline_one() {
    let d = delivery(QoS::AtLeastOnce, 1, 0);
    assert!(d.sub_ids().is_empty());
    let one = d.clone().with_sub_ids([7]);
    assert_eq!(one.sub_ids(), [7]);
    let three = d.clone().with_sub_ids([7, 1, 268_435_455]);
    assert_eq!(three.sub_ids(), [7, 1, 268_435_455]);
    // A link added or cleared around them leaves them alone.
    let mut linked = three.clone().with_link(Some(link(9)));
    assert_eq!(linked.sub_ids(), [7, 1, 268_435_455]);
    linked.set_link(None);
    assert_eq!(
        (linked.sub_ids(), linked.link()),
        (&[7, 1, 268_435_455][..], None)
    );
    let mut one_linked = one.with_link(Some(link(2)));
    one_linked.add_sub_id(5);
    assert_eq!(one_linked.sub_ids(), [7, 5]);
    assert_eq!(one_linked.link(), Some(link(2)));
}

#[test]
fn a_link_is_set_replaced_and_cleared() {
    let mut d = delivery(QoS::ExactlyOnce, 1, 4);
    assert_eq!(d.link(), None);
    d.set_link(Some(link(1)));
    d.set_link(Some(link(2)));
    assert_eq!(d.link(), Some(link(2)));
    let copy = d.clone();
    d.set_link(None);
    assert_eq!((d.link(), copy.link()), (None, Some(link(2))));
    assert_eq!((d.seq, d.qos), (Seq::new(4), QoS::ExactlyOnce));
}
