//! Cable-modem side of provisioning: the DOCSIS configuration files that carry a modem's
//! QoS (DESIGN.md §1.3, §1.5; issue 4), and the `shaper modem-config` operator commands.
//!
//! The byte-level codec, MICs and signature are in [`crate::proto::docsis`] (sans-IO); this
//! module maps QoS levels to files and back and does the file-system work.

pub mod cli;
pub mod configfile;

pub use configfile::{
    BuildOptions, ConfigFileError, ConfigStore, ModemConfig, build, build_batch, load_and_verify,
    modem_config, settings, verify, write_atomic,
};
