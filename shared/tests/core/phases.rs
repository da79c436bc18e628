//! An explanation cut into phases — `start`, `classify_samples` over any split of the rows,
//! `Pending::finish` — is the same explanation `explain` gives: the browser spreads the samples
//! over its workers this way.

use crate::common::{bundled, models_dir};
use camlime_core::explanation::{
    ExplainConfig, Method, SampleJob, Started, classify_samples, explain, start,
};
use camlime_core::{Error, Sequential, decode_image};

fn chelsea() -> image::RgbImage {
    let bytes = std::fs::read(models_dir().join("samples/chelsea.png")).unwrap();
    decode_image(&bytes, &Default::default()).unwrap()
}

#[test]
fn shared_samples_give_the_same_record() {
    let classifier = bundled("mobilenet_v2");
    let image = chelsea();
    for method in [Method::CamLime, Method::Lime] {
        let mut config = ExplainConfig {
            method,
            seed: 3,
            chunk: 16,
            ..ExplainConfig::default()
        };
        config.lime.num_samples = 50;
        let whole = explain(&classifier, &image, None, &config, &Sequential).unwrap();
        let Started::Sampling(pending) =
            start(&classifier, &image, None, &config, &Sequential).unwrap()
        else {
            panic!("{method:?} needs samples");
        };
        let job: SampleJob = pending.job().clone();
        assert_eq!(job.num_samples, 50);
        // Uneven shares that cut chunks in the middle, as three workers would get them.
        let mut targets: Vec<Vec<f64>> = vec![Vec::new(); job.labels.len()];
        for rows in [0..7, 7..33, 33..50] {
            let part =
                classify_samples(&classifier, &pending.base, &job, rows, &Sequential).unwrap();
            for (all, column) in targets.iter_mut().zip(part) {
                all.extend(column);
            }
        }
        let phased = pending.finish(&classifier, targets, &Sequential).unwrap();
        assert!(whole.same_results(&phased), "{method:?}");
        assert_eq!(whole.segments, phased.segments);
        assert!(!phased.explanations.is_empty());
    }
}

#[test]
fn cams_finish_at_once_and_bad_shares_are_errors() {
    let classifier = bundled("mobilenet_v2");
    let image = chelsea();
    let cam = ExplainConfig {
        method: "eigencam".parse::<Method>().unwrap(),
        ..ExplainConfig::default()
    };
    assert!(matches!(
        start(&classifier, &image, None, &cam, &Sequential).unwrap(),
        Started::Done(_)
    ));
    let mut config = ExplainConfig {
        method: Method::Lime,
        ..ExplainConfig::default()
    };
    config.lime.num_samples = 20;
    let Started::Sampling(pending) =
        start(&classifier, &image, None, &config, &Sequential).unwrap()
    else {
        panic!("LIME needs samples");
    };
    let job = pending.job().clone();
    let past_the_end = classify_samples(&classifier, &pending.base, &job, 10..21, &Sequential);
    assert!(matches!(past_the_end, Err(Error::Parameter(_))));
    let wrong_image = image::RgbImage::new(10, 10);
    assert!(classify_samples(&classifier, &wrong_image, &job, 0..5, &Sequential).is_err());
    let mut bad_label = job.clone();
    bad_label.labels.push(5000);
    assert!(classify_samples(&classifier, &pending.base, &bad_label, 0..5, &Sequential).is_err());
    let short = vec![vec![0.5; 19]; job.labels.len()];
    let error = pending
        .finish(&classifier, short, &Sequential)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("sample probabilities"),
        "{error}"
    );
}
