//! The scanner's detectors measured value by value on the project's generated patients (the
//! generator lives in the devkit, which the de-identification crate may not depend on).

use veil::deid::scanner::{Detector, Scanner};

/// Value-level recall of each detector on its own generated column, and how often it fires
/// on the other columns (false alarms), over generated patients.
#[test]
fn detector_precision_and_recall_on_generated_patients() {
    let s = Scanner::standard();
    let mut rng = veil::devkit::datagen::Rng::new(77);
    let people: Vec<veil::devkit::datagen::Patient> = (0..2000)
        .map(|i| veil::devkit::datagen::Patient::generate(&mut rng, i))
        .collect();
    let npis: Vec<String> = (0..2000)
        .map(|_| veil::devkit::datagen::npi(&mut rng))
        .collect();
    let columns: Vec<(Detector, Vec<String>)> = vec![
        (
            Detector::Ssn,
            people.iter().map(|p| p.ssn.clone()).collect(),
        ),
        (
            Detector::Phone,
            people.iter().map(|p| p.phone.clone()).collect(),
        ),
        (
            Detector::Email,
            people.iter().map(|p| p.email.clone()).collect(),
        ),
        (
            Detector::Mrn,
            people.iter().map(|p| p.mrn.clone()).collect(),
        ),
        (
            Detector::Date,
            people.iter().map(|p| p.birth_date.clone()).collect(),
        ),
        (
            Detector::Zip,
            people.iter().map(|p| p.zip.clone()).collect(),
        ),
        (
            Detector::Address,
            people.iter().map(|p| p.street.clone()).collect(),
        ),
        (
            Detector::Name,
            people
                .iter()
                .map(|p| format!("{} {}", p.given, p.family))
                .collect(),
        ),
        (Detector::Npi, npis),
    ];
    let mut report = Vec::new();
    for (d, values) in &columns {
        let hits = values
            .iter()
            .filter(|v| s.whole_value(v) == Some(*d))
            .count();
        let recall = hits as f64 / values.len() as f64;
        let (mut alarms, mut others) = (0, 0);
        for (o, vs) in &columns {
            if o == d {
                continue;
            }
            others += vs.len();
            alarms += vs.iter().filter(|v| s.whole_value(v) == Some(*d)).count();
        }
        let precision = hits as f64 / (hits + alarms).max(1) as f64;
        report.push(format!(
            "{} recall {recall:.3} precision {precision:.3} (false alarms {alarms} of {others})",
            d.name()
        ));
        assert!(recall >= 0.95, "{}: recall {recall}", d.name());
        assert!(precision >= 0.95, "{}: precision {precision}", d.name());
    }
    eprintln!("{}", report.join("\n"));
}
