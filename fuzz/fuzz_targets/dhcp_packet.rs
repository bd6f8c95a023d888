//! DHCPv4 decoder (RFC 2131) and FORCERENEW verification on arbitrary bytes: no panics, and
//! every message that decodes encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shaper::proto::dhcp::{ClientKeys, Message, ReplayWindow, verify_forcerenew};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let bytes = m.encode().expect("a decoded message encodes");
        let again = Message::decode(&bytes).expect("an encoded message decodes");
        assert_eq!(again, m);
    }
    let keys = ClientKeys {
        reconfigure_key: Some(&[0x5a; 16]),
        delayed: Some((1, b"secret")),
    };
    let mut window = ReplayWindow::default();
    let _ = verify_forcerenew(data, &[0x02, 0, 0, 0, 0, 1], keys, &mut window);
});
