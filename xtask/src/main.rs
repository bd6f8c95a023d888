//! `cargo xtask <task>`: the project's developer tasks.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("xtask: no task yet")
}
