//! The first run on a claims-shaped schema (dates inside composite keys, a composite foreign
//! key naming them, line numbers, amounts with abbreviations beside them): `propose`, `approve
//! --all-proposed`, stream and sink — no hold, no refusal, keys stay keys, joins hold, and no
//! production date reaches dev (only the year).

use std::time::Duration;

use crate::common::*;
use veil::deid::registry::{Decision, Rule};
use veil::review::workflow as review;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dates_in_composite_keys_stream_as_keys_and_the_joins_hold() {
    let env = Env::start(&[]);
    let prod = env.prod_client().await;
    prod.batch_execute(
        "CREATE TABLE clm (clm_id bigint, clm_from_dt date, clm_pmt_amt_ip numeric(10,2),
                           PRIMARY KEY (clm_id, clm_from_dt));
         CREATE TABLE clm_line (clm_id bigint, svc_dt date, line_num int, chrg_amt numeric(10,2),
                                PRIMARY KEY (clm_id, svc_dt, line_num),
                                FOREIGN KEY (clm_id, svc_dt) REFERENCES clm (clm_id, clm_from_dt));
         INSERT INTO clm SELECT g / 3 + 1000, date '2021-01-01' + (g % 3) * 40 + g % 7, (g * 1.5)::numeric(10,2)
           FROM generate_series(0, 899) g;
         INSERT INTO clm_line SELECT clm_id, clm_from_dt, l, l * 2.25 FROM clm CROSS JOIN generate_series(1, 3) l;",
    )
    .await
    .unwrap();
    veil::source::setup::run(&env.cfg).await.unwrap();
    let proposals = review::propose(&env.cfg).await.unwrap();
    assert_eq!(proposals.len(), 7, "{proposals:?}");
    let accepted = review::approve_all_proposed(&env.cfg, "first run (kim)")
        .await
        .unwrap();
    assert_eq!(accepted, 7);
    let registry = veil::deid::registry::Registry::load(&env.registry_dir()).unwrap();
    let rule = |t: &str, c: &str| match &registry.table(t).unwrap().columns[c].decision {
        Decision::Publish(r) => r.clone(),
        Decision::Blocked => panic!("{t}.{c} blocked"),
    };
    let (from_dt, svc_dt) = (
        rule("public.clm", "clm_from_dt"),
        rule("public.clm_line", "svc_dt"),
    );
    assert!(
        matches!(&from_dt, Rule::DateToken { with, .. } if with == &["clm_id"]),
        "{from_dt:?}"
    );
    assert_eq!(
        from_dt.domain(),
        svc_dt.domain(),
        "the reference shares the key's domain"
    );
    assert_eq!(
        rule("public.clm_line", "line_num"),
        Rule::Keep,
        "a line number stays"
    );
    assert_eq!(
        rule("public.clm", "clm_pmt_amt_ip"),
        Rule::Keep,
        "an amount is no IP"
    );

    let running = env.run_stream_and_sink();
    let dev = env.dev_client().await;
    let landed = wait_for(Duration::from_secs(120), || async {
        let dev = env.dev_client().await;
        dev.query_one(
            "SELECT (SELECT count(*) FROM public.clm) + (SELECT count(*) FROM public.clm_line)",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 3600)
        .unwrap_or(false)
    })
    .await;
    assert!(landed, "the snapshot reached dev");

    // Production changes: new claims and lines, an amount updated, a line deleted.
    prod.batch_execute(
        "INSERT INTO clm VALUES (5000, '2022-02-02', 10.00), (5000, '2022-03-03', 11.00);
         INSERT INTO clm_line VALUES (5000, '2022-02-02', 1, 1.00), (5000, '2022-03-03', 1, 2.00);
         UPDATE clm SET clm_pmt_amt_ip = 99.99 WHERE clm_id = 1000;
         -- The third line of each of the claim's three dates.
         DELETE FROM clm_line WHERE clm_id = 1001 AND line_num = 3;",
    )
    .await
    .unwrap();
    let caught_up = wait_for(Duration::from_secs(60), || async {
        let dev = env.dev_client().await;
        dev.query_one(
            "SELECT (SELECT count(*) FROM public.clm), (SELECT count(*) FROM public.clm_line), \
                    (SELECT count(*) FROM public.clm WHERE clm_pmt_amt_ip = 99.99)",
            &[],
        )
        .await
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)) == (902, 2699, 3))
        .unwrap_or(false)
    })
    .await;
    if !caught_up {
        let got = text_rows(
            &dev,
            "SELECT (SELECT count(*) FROM public.clm)::text, (SELECT count(*) FROM public.clm_line)::text, \
                    (SELECT count(*) FROM public.clm WHERE clm_pmt_amt_ip = 99.99)::text",
        )
        .await;
        panic!("changes of rows keyed by tokenized dates were not applied: dev has {got:?}");
    }

    let one = |sql: &'static str| {
        let (p, d) = (&prod, &dev);
        async move { (count(p, sql).await, count(d, sql).await) }
    };
    // Keys stay keys, and the composite foreign key finds its claim in dev as in production.
    let (p, d) = one("SELECT count(DISTINCT (clm_id, clm_from_dt)) FROM clm").await;
    assert_eq!(p, d);
    let (p, d) = one(
        "SELECT count(*) FROM clm_line l JOIN clm c ON c.clm_id = l.clm_id AND c.clm_from_dt = l.svc_dt",
    )
    .await;
    assert_eq!((p, d), (2699, 2699));
    // The year stays, the day does not: years match row for row in distribution, and dev's
    // dates are spread over the year where production had a handful.
    let py = text_rows(
        &prod,
        "SELECT extract(year FROM clm_from_dt)::text, count(*)::text FROM clm GROUP BY 1 ORDER BY 1",
    )
    .await;
    let dy = text_rows(
        &dev,
        "SELECT extract(year FROM clm_from_dt)::text, count(*)::text FROM clm GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(py, dy, "the year of every date is kept");
    let (p, d) = one("SELECT count(DISTINCT clm_from_dt) FROM clm").await;
    assert!(
        p < 30 && d > 100,
        "dates drawn in the year: {p} in production, {d} in dev"
    );
    let kept = count(
        &dev,
        "SELECT count(*) FROM clm WHERE clm_from_dt IN ('2021-01-01','2021-01-02','2021-01-03', \
         '2021-01-04','2021-01-05','2021-01-06','2021-01-07')",
    )
    .await;
    assert!(
        kept < 60,
        "{kept} of 902 dev rows on production's own first days"
    );
    // Line numbers and amounts as they are.
    let (p, d) = one("SELECT sum(line_num) FROM clm_line").await;
    assert_eq!(p, d);
    running.stop().await;
}
