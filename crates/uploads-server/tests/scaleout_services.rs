//! The scale-out harness itself: a private PostgreSQL and an S3 emulator start, hand each
//! test its own database and bucket, and answer.

mod support;

use support::services::Services;

#[test]
fn each_test_gets_its_own_database_and_bucket() {
    let services = Services::get();
    let (one, two) = (services.fresh(), services.fresh());
    assert_ne!(one.database, two.database);
    assert_ne!(one.bucket, two.bucket);
    services.psql_on(&one.database, "CREATE TABLE marker (x int)");
    assert_eq!(
        services.psql_on(
            &two.database,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
        ),
        "0",
        "databases are apart"
    );
    assert!(services.list_objects(&one.bucket).is_empty());
    assert!(
        one.database_url
            .contains(&format!(":{}/", services.pg_port))
    );
    assert!(
        one.object_store
            .starts_with(&format!("s3://{}/", one.bucket))
    );
}
