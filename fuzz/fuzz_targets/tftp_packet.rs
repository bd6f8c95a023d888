//! TFTP codec (RFC 1350 §5, RFC 2347): any datagram either fails to parse or parses into a
//! packet that encodes back to exactly the same bytes; the server-port classifier and the
//! error encoder never panic and never answer with more bytes than they received.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shaper::proto::tftp::{Accept, Packet, accept};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(out, data, "round trip of {p:?}");
    }
    if let Accept::Reply(reply) = accept(data) {
        assert!(reply.len() <= data.len().max(5), "amplifying reply");
        assert!(Packet::parse(&reply).is_ok(), "unparseable reply {reply:?}");
    }
});
