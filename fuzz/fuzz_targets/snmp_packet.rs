//! SNMPv2c BER decoder (RFC 3416/3417) and the emulator's agent on arbitrary bytes: no panics,
//! and every message that decodes encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shaper::modem::emulator::{Agent, AgentReply};
use shaper::proto::snmp::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let bytes = m.encode().expect("a decoded message encodes");
        let again = Message::decode(&bytes).expect("an encoded message decodes");
        assert_eq!(again, m);
        let _ = m.check_response(m.pdu.request_id);
    }
    let agent = Agent {
        rw_community: b"private".to_vec(),
        ro_community: Some(b"public".to_vec()),
    };
    if let Ok(AgentReply {
        response: Some(resp),
        ..
    }) = agent.handle(data)
    {
        Message::decode(&resp).expect("the agent's response decodes");
    }
});
