//! Single-task accuracy of every run: test accuracy and loss, train accuracy, the frozen
//! backbone's test accuracy and the gain over it, and the endpoint's per-example predictions.
//! Always measured; it has no table.

use super::base::{Input, Measure, Rows, Unit};
use anyhow::{bail, Result};

/// The always-taken single-task metrics of every run.
#[derive(Clone, Debug)]
pub struct Accuracy;

impl Measure for Accuracy {
    fn name(&self) -> &'static str {
        "accuracy"
    }
    fn options_json(&self) -> Result<Option<String>> {
        Ok(None)
    }
    fn unit(&self) -> Unit {
        Unit::Run
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Run { tag, run, env, cfg } = input else { bail!("internal: accuracy is measured on runs") };
        let (test, train, frozen) = (&run.manifest.test, &run.manifest.train, &run.manifest.frozen_test);
        let n = self.name();
        // The endpoint once more, example by example (its metrics are the manifest's).
        let (_, examples) = env.test.evaluate_examples(&run.adapter.deltas())?;
        let predictions = tag.predictions("endpoint", cfg.data_seed, &examples);
        let rows = vec![
            tag.row(n, "", "test_accuracy", test.accuracy),
            tag.row(n, "", "test_loss", test.loss),
            tag.row(n, "", "train_accuracy", train.accuracy),
            tag.row(n, "", "frozen_accuracy", frozen.accuracy),
            tag.row(n, "", "gain_over_frozen", test.accuracy - frozen.accuracy),
        ];
        Ok(Rows::with_predictions(rows, predictions))
    }
}
