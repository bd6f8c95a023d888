//! Cable-modem side of provisioning (docs/ARCHITECTURE.md §1.3–1.5; issue 4): the DOCSIS
//! configuration files that carry a modem's QoS and the `shaper modem-config` operator commands
//! (`configfile`, `cli`), making a modem re-fetch its configuration (`reboot`), and a modem
//! emulator that receives those triggers (`emulator`), for the lab and interop tests.
//!
//! The byte-level codecs, MICs and signature are in [`crate::proto`] (sans-IO); this module
//! maps QoS levels to files and back and does the file-system and socket work.

pub mod cli;
pub mod configfile;
pub mod emulator;
pub mod keys;
pub mod pipeline;
pub mod reboot;
pub mod watch;

pub use configfile::{
    BuildOptions, ConfigFileError, ConfigStore, ModemConfig, build, build_batch, load_and_verify,
    modem_config, settings, verify, write_atomic,
};
