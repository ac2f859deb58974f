//! The metrics file: after every array command, the array's metrics and the last run
//! of each command replace the config's `metrics-file` (see `parity_core::metrics`).

use std::path::Path;

use parity_core::config::Config;
use parity_core::metrics::{self, Command, LastRun, Runs};
use parity_core::state::store::WriteFailure;
use parity_core::status::{status, Status};
use parity_core::sync;

/// The metrics text: the array's `status` (when known), the free space of each data
/// disk (a disk that cannot be asked is left out) and `runs`.
pub fn text(config: &Config, status: Option<&Status>, runs: &Runs) -> String {
    let free: Vec<(String, u64)> = config
        .data
        .iter()
        .filter_map(|d| {
            metrics::free_bytes(&d.dir)
                .ok()
                .map(|bytes| (d.name.clone(), bytes))
        })
        .collect();
    metrics::render(status, &free, runs)
}

/// The runs recorded in the config's metrics file (none without one).
pub fn recorded_runs(config: &Config) -> Runs {
    config
        .metrics_file
        .as_ref()
        .map_or_else(Runs::new, |m| metrics::read_runs(&m.path))
}

/// Records `run` of `command` in the metrics file of the config at `conf`, when it
/// names one.
pub fn record(conf: &Path, command: Command, run: LastRun) -> Result<(), WriteFailure> {
    // A config that does not load names no metrics file; the command said why.
    let Ok(config) = Config::load(conf) else {
        return Ok(());
    };
    let Some(file) = &config.metrics_file else {
        return Ok(());
    };
    // The state is read back rather than handed over by the command, so the file
    // shows what is on disk after any command, a failed one included. A state that
    // does not load leaves the array's metrics out; the command reported why.
    let status = sync::load_state(&config)
        .ok()
        .map(|loaded| status(&loaded.state, sync::now()));
    let mut runs = metrics::read_runs(&file.path);
    runs.insert(command, run);
    metrics::write(&file.path, &text(&config, status.as_ref(), &runs))
}
