pub mod pkt;
pub mod radius;
pub mod shaper_run;
