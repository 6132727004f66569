//! The vault's only read path (issue: no way around the reveal log): against a real PostgreSQL
//! vault, the compliance role cannot read values directly, cannot forge or reset the log, and
//! gets a value only for a reveal request that has committed — once. The stream's writer role
//! cannot reveal at all.

use crate::common::*;
use veil::devkit::testkit::PgCluster;

const VALUE: &str = "MRN-00042-SECRET";
const TOKEN: &str = "TKN-77AB";

fn digest(token: &str) -> Vec<u8> {
    blake3::hash(token.as_bytes()).as_bytes().to_vec()
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn vault_values_are_read_only_through_a_committed_logged_request() {
    let pg = PgCluster::start().unwrap();
    pg.create_db(VAULT_DB).unwrap();
    let admin = connect(&pg.dsn(VAULT_DB)).await;
    // A vault installed by an earlier version: the reader could SELECT values and INSERT into
    // the log. Installing again (an upgrade) takes both back.
    admin
        .batch_execute(veil::deid::vault::SCHEMA_SQL)
        .await
        .unwrap();
    admin
        .batch_execute(
            "GRANT SELECT ON veil_vault.tokens TO veil_vault_reader;
             GRANT INSERT, UPDATE ON veil_vault.reveals TO veil_vault_reader;",
        )
        .await
        .unwrap();
    admin
        .batch_execute(veil::deid::vault::SCHEMA_SQL)
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO veil_vault.tokens (domain, value_hash, token, token_hash, value, key_id, uniq) \
             VALUES ('mrn', '\\x01', $1, $2, $3, 'k1', true)",
            &[&TOKEN, &digest(TOKEN), &VALUE],
        )
        .await
        .unwrap();
    admin
        .batch_execute(
            "CREATE ROLE officer LOGIN PASSWORD 'pw' IN ROLE veil_vault_reader;
             CREATE ROLE officer2 LOGIN PASSWORD 'pw' IN ROLE veil_vault_reader;
             CREATE ROLE streamer LOGIN PASSWORD 'pw' IN ROLE veil_vault_writer;",
        )
        .await
        .unwrap();
    let as_role = |role: &str| {
        pg.dsn(VAULT_DB)
            .replace("user=veil", &format!("user={role}"))
            .replace(
                &format!("password={}", veil::devkit::testkit::TEST_PASSWORD),
                "password=pw",
            )
    };
    let officer = connect(&as_role("officer")).await;
    let request = "SELECT veil_vault.request_reveal('mrn', $1, 'INC-1', 'alice', false)";

    // No direct read of values, no forged or reset log rows.
    for sql in [
        "SELECT value FROM veil_vault.tokens",
        "SELECT * FROM veil_vault.tokens",
        "INSERT INTO veil_vault.reveals (os_user, ticket, domain, token_hash, found) VALUES ('x', 'x', 'mrn', 'x', true)",
        "UPDATE veil_vault.reveals SET revealed_at = NULL",
        "DELETE FROM veil_vault.reveals",
    ] {
        let e = officer.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
    }

    // The rollback trick: request and reveal inside one transaction that is rolled back.
    officer.batch_execute("BEGIN").await.unwrap();
    let id: i64 = officer
        .query_one(request, &[&digest(TOKEN)])
        .await
        .unwrap()
        .get(0);
    let e = officer
        .query_one("SELECT veil_vault.reveal($1)", &[&id])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000", "{e}");
    assert!(!format!("{e:?}").contains(VALUE));
    officer.batch_execute("ROLLBACK").await.unwrap();
    // The request rolled back with it, so it reveals nothing afterwards either.
    let e = officer
        .query_one("SELECT veil_vault.reveal($1)", &[&id])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42704", "{e}");
    let logged: i64 = admin
        .query_one("SELECT count(*) FROM veil_vault.reveals", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 0);

    // The honest path: a committed request, then the value, once.
    let id: i64 = officer
        .query_one(request, &[&digest(TOKEN)])
        .await
        .unwrap()
        .get(0);
    // Another compliance login cannot spend this request.
    let officer2 = connect(&as_role("officer2")).await;
    let e = officer2
        .query_one("SELECT veil_vault.reveal($1)", &[&id])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    let value: Option<String> = officer
        .query_one("SELECT veil_vault.reveal($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(value.as_deref(), Some(VALUE));
    let e = officer
        .query_one("SELECT veil_vault.reveal($1)", &[&id])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "55000", "a request is spent once: {e}");
    let log = admin
        .query_one(
            "SELECT db_user, os_user, ticket, found, revealed_at IS NOT NULL, token_hash FROM veil_vault.reveals",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(log.get::<_, String>(0), "officer");
    assert_eq!(log.get::<_, String>(1), "alice");
    assert_eq!(log.get::<_, String>(2), "INC-1");
    assert_eq!(log.get::<_, Option<bool>>(3), Some(true));
    assert!(log.get::<_, bool>(4));
    assert_eq!(
        log.get::<_, String>(5),
        blake3::hash(TOKEN.as_bytes()).to_hex()[..32]
    );
    // No ticket, no request.
    let e = officer
        .query_one(
            "SELECT veil_vault.request_reveal('mrn', $1, ' ', 'alice', false)",
            &[&digest(TOKEN)],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023", "{e}");

    // The stream's writer role can neither read values nor reveal.
    let streamer = connect(&as_role("streamer")).await;
    assert!(
        streamer
            .query("SELECT token FROM veil_vault.tokens", &[])
            .await
            .is_ok()
    );
    for sql in [
        "SELECT value FROM veil_vault.tokens".to_owned(),
        format!("SELECT veil_vault.reveal({id})"),
        format!(
            "SELECT veil_vault.request_reveal('mrn', '\\x{}', 'INC-2', 'mallory', false)",
            hex::encode(digest(TOKEN))
        ),
    ] {
        let e = streamer.batch_execute(&sql).await.unwrap_err();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
    }
}
