//! RADIUS codec: any bytes that decode re-encode to exactly the packet's own bytes (RFC 2865
//! §3: the Length field bounds them), and verification, rate decoding and session selection
//! never panic on them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shaper::notify::decode_rate;
use shaper::proto::radius::{Packet, packet::packet_bytes, verify_request, verify_response};
use shaper::sessions::SessionSelector;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::decode(data) else {
        return;
    };
    let own = packet_bytes(data).expect("decode accepted the length");
    let bytes = p.encode().expect("a decoded packet re-encodes");
    assert_eq!(bytes, own, "round trip is byte-exact");
    assert_eq!(Packet::decode(&bytes).as_ref(), Ok(&p));
    let _ = verify_request(data, b"secret", false);
    let _ = verify_response(data, &[0; 16], b"secret", true);
    let _ = decode_rate(&p);
    let _ = SessionSelector::from_packet(&p);
});
