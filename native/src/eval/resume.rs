//! What an evaluation folder records so that a resumed run computes only what is missing and
//! never mixes in scores of other settings. `run.json` holds every setting that decides a score —
//! the model's name, digest and preprocessing, each method's whole explanation configuration,
//! each metric with all its parameters, the metrics' seed — and the sha256 of every image and
//! mask scored. A resumed run with any difference is refused with the differing settings named;
//! new images (a larger `--limit`, files added to the folder) are welcome.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The format tag of `run.json` (version 1 recorded only the seeds, the sample count and the
/// segmenter, so a changed layer or metric parameter resumed silently).
const FORMAT: &str = "camlime-eval-run/2";

/// Everything that decides an evaluation's scores.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    format: String,
    /// Setting → value; nested objects flattened to `a.b.c` names.
    settings: BTreeMap<String, Value>,
    /// Image file name → sha256 of its bytes.
    images: BTreeMap<String, String>,
    /// Mask file name → sha256 of its bytes.
    masks: BTreeMap<String, String>,
}

impl Default for RunRecord {
    fn default() -> Self {
        Self {
            format: FORMAT.to_owned(),
            settings: BTreeMap::new(),
            images: BTreeMap::new(),
            masks: BTreeMap::new(),
        }
    }
}

impl RunRecord {
    /// Record `value` as the setting `name`; an object's fields become `name.field` settings.
    pub fn setting(&mut self, name: &str, value: &impl Serialize) -> Result<()> {
        flatten(name, serde_json::to_value(value)?, &mut self.settings);
        Ok(())
    }

    /// Record an image's bytes.
    pub fn image(&mut self, name: &str, bytes: &[u8]) {
        self.images.insert(name.to_owned(), sha256(bytes));
    }

    /// Record a mask's bytes.
    pub fn mask(&mut self, name: &str, bytes: &[u8]) {
        self.masks.insert(name.to_owned(), sha256(bytes));
    }

    /// Start a run in `dir`: a new folder gets this record; a folder holding a run is resumed
    /// only if nothing differs, and its record then also lists this run's new images.
    pub fn start(self, dir: &Path) -> Result<()> {
        let path = dir.join("run.json");
        let record = if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let previous = match serde_json::from_str::<RunRecord>(&text) {
                Ok(previous) if previous.format == FORMAT => previous,
                _ => bail!(
                    "{} holds a run of another camlime version or no evaluation at all \
                     ({} is not a {FORMAT} record); choose another --out or delete it",
                    dir.display(),
                    path.display()
                ),
            };
            let differences = previous.differences(&self);
            if !differences.is_empty() {
                bail!(
                    "{} holds a run with other settings; choose another --out or delete it:\n  {}",
                    dir.display(),
                    differences.join("\n  ")
                );
            }
            previous.extended(self)
        } else {
            self
        };
        let temporary = dir.join("run.json.partial");
        std::fs::write(&temporary, serde_json::to_string_pretty(&record)? + "\n")
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// What `next` changes: every setting that differs or exists on one side only, and every
    /// image or mask recorded by both with other bytes.
    fn differences(&self, next: &RunRecord) -> Vec<String> {
        let mut names: Vec<&String> = self.settings.keys().chain(next.settings.keys()).collect();
        names.sort();
        names.dedup();
        let shown =
            |value: Option<&Value>| value.map_or_else(|| "unset".to_owned(), Value::to_string);
        let mut differences: Vec<String> = names
            .into_iter()
            .filter_map(|name| {
                let (was, is) = (self.settings.get(name), next.settings.get(name));
                (was != is).then(|| format!("{name}: {} → {}", shown(was), shown(is)))
            })
            .collect();
        for (kind, was, is) in [
            ("image", &self.images, &next.images),
            ("mask", &self.masks, &next.masks),
        ] {
            for (name, digest) in is {
                if was.get(name).is_some_and(|previous| previous != digest) {
                    differences.push(format!("{kind} {name}: other bytes (sha256 {digest})"));
                }
            }
        }
        differences
    }

    /// This record with `next`'s images and masks added.
    fn extended(mut self, next: RunRecord) -> Self {
        self.images.extend(next.images);
        self.masks.extend(next.masks);
        self
    }
}

/// `value` under `name`: an object's fields as `name.field` (recursively), anything else as is.
fn flatten(name: &str, value: Value, into: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (field, value) in fields {
                flatten(&format!("{name}.{field}"), value, into);
            }
        }
        value => {
            into.insert(name.to_owned(), value);
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(layer: &str, image: &[u8]) -> RunRecord {
        let mut record = RunRecord::default();
        record
            .setting(
                "explanation.gradcam",
                &json!({"layers": [layer], "lime": {"num_samples": 1000}}),
            )
            .unwrap();
        record.image("a.png", image);
        record
    }

    #[test]
    fn differences_name_each_setting_and_changed_file() {
        let first = record("features.17", b"one");
        assert!(first.differences(&record("features.17", b"one")).is_empty());
        assert_eq!(
            first.differences(&record("features.16", b"two")),
            [
                "explanation.gradcam.layers: [\"features.17\"] → [\"features.16\"]".to_owned(),
                format!("image a.png: other bytes (sha256 {})", sha256(b"two")),
            ]
        );
        let mut more = record("features.17", b"one");
        more.setting("metric_seed", &3).unwrap();
        more.image("b.png", b"new");
        assert_eq!(first.differences(&more), ["metric_seed: unset → 3"]);
        let mut fewer = record("features.17", b"one");
        fewer
            .settings
            .remove("explanation.gradcam.lime.num_samples");
        assert_eq!(
            first.differences(&fewer),
            ["explanation.gradcam.lime.num_samples: 1000 → unset"]
        );
    }
}
