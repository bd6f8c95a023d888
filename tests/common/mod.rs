pub mod pkt;
pub mod shaper_run;
