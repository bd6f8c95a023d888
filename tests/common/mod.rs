pub mod pkt;
pub mod pyenv;
pub mod radius;
pub mod shaper_run;
