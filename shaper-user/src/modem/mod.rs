//! Modem-side operations: making a modem re-fetch its configuration (`reboot`) and a modem
//! emulator that receives those triggers (`emulator`), for the lab and interop tests.

pub mod emulator;
pub mod reboot;
