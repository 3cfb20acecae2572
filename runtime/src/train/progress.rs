//! Progress output of a run: the bar or line per epoch, and the progress JSON.

use super::*;

/// Progress output for one run.
pub(super) struct Reporter {
    pub(super) mode: ProgressMode,
    pub(super) bar: Option<ProgressBar>,
}

impl Reporter {
    pub(super) fn new(mode: ProgressMode) -> Reporter {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Auto,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        };
        Reporter { mode, bar: None }
    }

    pub(super) fn start_epoch(&mut self, epoch: usize, epochs: usize, batches: u64, done: u64) {
        if self.mode != ProgressMode::Auto {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(batches), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        bar.set_position(done);
        self.bar = Some(bar);
    }

    pub(super) fn batch_done(&self, running_loss: f64, samples_per_s: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "loss {running_loss:.4} {samples_per_s:.0} samples/s"
            ));
            bar.inc(1);
        }
    }

    /// The run stops mid-epoch: the bar goes.
    pub(super) fn interrupted(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    pub(super) fn end_epoch(&mut self, record: &EpochRecord, epochs: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.mode != ProgressMode::Quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "epoch {}/{epochs}  {record}  {:.0} samples/s  {:.1} s",
                record.epoch, record.samples_per_s, record.seconds
            );
        }
    }
}

/// The progress JSON of a checkpoint: the partial epoch's running sums, whether the run
/// has stopped, the state of early stopping and of a plateau schedule, and the settings a
/// resumed run compares with its own (epochs, base rate, schedule, data fingerprint). The
/// per-epoch history is not in it: it stays in `metrics.jsonl`, so saving costs the same
/// at every epoch.
pub(super) fn progress_json(
    partial: Option<&Accumulator>,
    stopped: bool,
    watch: &Watch,
    plateau: &Plateau,
    config: &TrainConfig,
    data: &str,
) -> serde_json::Value {
    serde_json::json!({
        "partial": partial.map(Accumulator::to_json),
        "stopped": stopped,
        "watch": watch.to_json(),
        "plateau": plateau.to_json(),
        "epochs": config.epochs,
        "lr": config.lr,
        "schedule": config.schedule.as_ref().map(|s| s.kind.to_string()),
        "data": data,
        "ranks": config.distributed.as_ref().map_or(1, |d| d.0.size()),
    })
}
