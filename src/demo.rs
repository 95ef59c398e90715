//! (in progress: the demo)

/// Options of `backsweep demo`.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Leave the server running after the sweep.
    pub keep: bool,
}

/// Runs the demo.
pub async fn run(_options: &DemoOptions) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
