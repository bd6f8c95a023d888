//! Fuzz target for the DOCSIS configuration-file codec (`shaper::proto::docsis`): decoding
//! arbitrary bytes must not panic, and whatever decodes must re-encode byte for byte (unknown
//! TLVs are kept as `Unknown { code, data }`, the pad count after the end marker is kept). The
//! MIC and signature checks and the text form run on the same input and must not panic either;
//! a decoded file's text form must parse back to the same TLVs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shaper::proto::docsis::{self, CmtsKey, ConfigFile, TrustedKeys, text};

fuzz_target!(|data: &[u8]| {
    let _ = docsis::verify_mics(data, &CmtsKey::new(b"fuzz"));
    let _ = docsis::verify_signature(data, &TrustedKeys::new());
    if let Ok(file) = ConfigFile::decode(data) {
        let again = file.encode().expect("a decoded file re-encodes");
        assert_eq!(again, data, "decode -> encode is not byte-exact");
        let parsed = text::parse(&text::render(&file)).expect("rendered text parses");
        assert_eq!(parsed, file.tlvs, "text form does not round-trip");
        let _ = file.service_flows();
        let _ = file.class_of_service();
        let _ = file.vendor_specific();
    }
});
