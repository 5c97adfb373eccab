"""Interop checks with paho-mqtt 2.x (MQTT 5 and 3.1.1) against a running broker.

Usage: paho_check.py HOST PORT. Prints PASS/FAIL lines; exits 1 on any failure. Every wait is
bounded by an event with a timeout.
"""

import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST, PORT = sys.argv[1], int(sys.argv[2])
WAIT = 5.0
failures = 0


def report(name, ok, detail=""):
    global failures
    if ok:
        print(f"PASS paho: {name}")
    else:
        failures += 1
        print(f"FAIL paho: {name}: {detail}")


class Client:
    """A paho client whose messages land in a list, with bounded waits."""

    def __init__(self, protocol=mqtt.MQTTv5, client_id=None, clean=True, props=None):
        self.client_id = client_id or f"paho-{uuid.uuid4().hex[:8]}"
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol,
                             clean_session=None if protocol == mqtt.MQTTv5 else clean)
        self.protocol = protocol
        self.messages = []
        self.cond = threading.Condition()
        self.notify = None  # an extra Condition to wake when a message arrives
        self.connack = None
        self.connected = threading.Event()
        self.subacked = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subacked.set()
        kwargs = {}
        if protocol == mqtt.MQTTv5:
            kwargs["clean_start"] = clean
            kwargs["properties"] = props
        self.c.connect(HOST, PORT, keepalive=30, **kwargs)
        self.c.loop_start()
        if not self.connected.wait(WAIT):
            raise RuntimeError("no CONNACK")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = (flags, reason_code, properties)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()
        if self.notify is not None:
            with self.notify:
                self.notify.notify_all()

    def subscribe(self, topic, qos=1, **kw):
        self.subacked.clear()
        if self.protocol == mqtt.MQTTv5:
            opts = SubscribeOptions(qos=qos, noLocal=kw.get("no_local", False),
                                    retainAsPublished=kw.get("rap", False))
            self.c.subscribe(topic, options=opts, properties=kw.get("props"))
        else:
            self.c.subscribe(topic, qos)
        if not self.subacked.wait(WAIT):
            raise RuntimeError("no SUBACK")

    def wait_messages(self, n, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.messages)

    def wait_for(self, pred, timeout=WAIT):
        """Waits until pred(list of payload strings) holds; returns the payloads either way."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                payloads = [m.payload.decode() for m in self.messages]
                left = deadline - time.monotonic()
                if pred(payloads) or left <= 0:
                    return payloads
                self.cond.wait(left)

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(WAIT)
        return info

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def check(name, fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - any failure of a check is reported, not raised
        report(name, False, repr(e))


def forwarded_properties():
    sub, pub = Client(), Client()
    sub.subscribe("paho/props", 1)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k", "v"), ("k", "w")]
    props.ContentType = "text/plain"
    props.ResponseTopic = "paho/reply"
    props.CorrelationData = b"\x01\x02"
    props.PayloadFormatIndicator = 1
    pub.publish("paho/props", "x", 1, props=props)
    got = sub.wait_messages(1)
    ok = bool(got)
    if ok:
        p = got[0].properties
        ok = (getattr(p, "UserProperty", None) == [("k", "v"), ("k", "w")]
              and p.ContentType == "text/plain" and p.ResponseTopic == "paho/reply"
              and p.CorrelationData == b"\x01\x02" and p.PayloadFormatIndicator == 1)
    report("user properties, content type, response topic, correlation data forwarded", ok,
           got[0].properties if got else "nothing received")
    sub.close(), pub.close()


def connack_properties():
    # Receive Maximum and Topic Alias Maximum must be sent (the brief's minimum, and what both
    # Mosquitto and Tern do); the others may be absent, which means the spec's default.
    defaults = {"ReceiveMaximum": 65535, "TopicAliasMaximum": 0, "MaximumQoS": 2,
                "RetainAvailable": 1, "MaximumPacketSize": "unlimited",
                "WildcardSubscriptionAvailable": 1, "SubscriptionIdentifierAvailable": 1,
                "SharedSubscriptionAvailable": 1, "ServerKeepAlive": "client's"}
    c = Client()
    flags, rc, p = c.connack
    shown = []
    for name, default in defaults.items():
        value = getattr(p, name, None)
        shown.append(f"{name}={value}" if value is not None else f"{name}=absent(default {default})")
    print("INFO paho: CONNACK", rc, "session present", flags.session_present, ", ".join(shown))
    ok = (not rc.is_failure and hasattr(p, "ReceiveMaximum") and hasattr(p, "TopicAliasMaximum")
          and p.ReceiveMaximum > 0)
    report("CONNACK carries Receive Maximum and Topic Alias Maximum", ok, str(p))
    c.close()


def qos2_round_trip():
    for proto, label in ((mqtt.MQTTv5, "v5"), (mqtt.MQTTv311, "v3.1.1")):
        sub, pub = Client(proto), Client(proto)
        sub.subscribe(f"paho/q2/{label}", 2)
        for i in range(5):
            pub.publish(f"paho/q2/{label}", f"m{i}", 2)
        got = sub.wait_messages(5)
        payloads = [m.payload.decode() for m in got]
        report(f"QoS 2 round trip in order ({label})", payloads == [f"m{i}" for i in range(5)]
               and all(m.qos == 2 for m in got), payloads)
        sub.close(), pub.close()


def subscription_identifier():
    sub, pub = Client(), Client()
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 42
    sub.subscribe("paho/subid/#", 1, props=sp)
    pub.publish("paho/subid/x", "x")
    got = sub.wait_messages(1)
    ids = getattr(got[0].properties, "SubscriptionIdentifier", None) if got else None
    report("subscription identifier delivered back", ids == [42], ids)
    sub.close(), pub.close()


def no_local():
    c, other = Client(), Client()
    c.subscribe("paho/nolocal", 1, no_local=True)
    c.subscribe("paho/nolocal-mark", 1)
    c.publish("paho/nolocal", "own")
    # Published by the same client after "own": once it arrives, an echoed "own" would have too.
    c.publish("paho/nolocal-mark", "mark")
    other.publish("paho/nolocal", "theirs")
    got = c.wait_for(lambda ms: "mark" in ms and "theirs" in ms)
    got = [p for p in got if p != "mark"]
    report("no local: own messages not echoed, others' delivered", got == ["theirs"], got)
    c.close(), other.close()


def retain_as_published():
    other = Client()
    # Retain As Published: a live retained publish keeps retain=1 for a RAP subscriber and is
    # forwarded with retain=0 to an ordinary one.
    r, plain = Client(), Client()
    r.subscribe("paho/rap", 1, rap=True)
    plain.subscribe("paho/rap", 1)
    other.publish("paho/rap", "kept", retain=True)
    got_r, got_p = r.wait_messages(1), plain.wait_messages(1)
    flags = ([m.retain for m in got_r], [m.retain for m in got_p])
    report("retain as published keeps the retain flag; without it the flag is cleared",
           flags == ([True], [False]), flags)
    other.publish("paho/rap", "", retain=True)
    r.close(), plain.close(), other.close()


def shared_subscription():
    a, b, pub = Client(), Client(), Client()
    a.subscribe("$share/g/paho/shared", 1)
    b.subscribe("$share/g/paho/shared", 1)
    for i in range(20):
        pub.publish("paho/shared", f"{i}")
    both = threading.Condition()
    a.notify, b.notify = both, both
    deadline = time.monotonic() + WAIT
    with both:
        while len(a.messages) + len(b.messages) < 20 and time.monotonic() < deadline:
            both.wait(0.1)
    pa = [m.payload.decode() for m in a.messages]
    pb = [m.payload.decode() for m in b.messages]
    ok = sorted(pa + pb, key=int) == [str(i) for i in range(20)] and pa and pb
    report("shared subscription: each message to exactly one member, both used", ok, (pa, pb))
    a.close(), b.close(), pub.close()


def message_expiry():
    cid = f"paho-exp-{uuid.uuid4().hex[:6]}"
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = 60
    s = Client(client_id=cid, clean=True, props=cp)
    s.subscribe("paho/expiry", 1)
    s.close()
    pub = Client()
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 1
    pub.publish("paho/expiry", "short", 1, props=props)
    props2 = Properties(PacketTypes.PUBLISH)
    props2.MessageExpiryInterval = 60
    pub.publish("paho/expiry", "long", 1, props=props2)
    time.sleep(2.2)  # the point of the check: the first message's expiry passes while offline
    s2 = Client(client_id=cid, clean=False, props=cp)
    # "long" was published after "short", so once it arrives an unexpired "short" would have too.
    s2.wait_for(lambda ms: "long" in ms)
    payloads = [m.payload.decode() for m in s2.messages]
    longs = [m for m in s2.messages if m.payload == b"long"]
    left = getattr(longs[0].properties, "MessageExpiryInterval", None) if longs else None
    report("expired queued message not delivered; remaining interval forwarded",
           payloads == ["long"] and left is not None and left <= 60, (payloads, left))
    s2.close(), pub.close()
    Client(client_id=cid, clean=True).close()  # discard the session


for name, fn in [("forwarded properties", forwarded_properties), ("connack", connack_properties),
                 ("qos2", qos2_round_trip), ("subscription id", subscription_identifier),
                 ("no local", no_local),
                 ("retain as published", retain_as_published), ("shared", shared_subscription),
                 ("message expiry", message_expiry)]:
    check(name, fn)

sys.exit(1 if failures else 0)
