//! Shared databases split by size (issue 16): a product's schema-mode tenants on a host fill
//! `<product>_shared`, then `<product>_shared_2`, ... (`[products]
//! tenants_per_shared_database`), so a backup's catalog read stays bounded. Tenants in every
//! shard work, back up and restore exactly, and see only their own schema.

use tenant_master::{
    backups::Kind,
    ops::{backup, restore},
};
use tenant_master_tests::{names_in_backup, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn tenants_fill_one_shared_database_after_another() {
    let mut env = TestEnv::new().await;
    env.config.products.tenants_per_shared_database = 2;
    let mut tenants = Vec::new();
    for i in 0..5 {
        tenants.push(env.provisioned(&env.slug(&format!("shard{i}")), "starter").await);
    }
    let prefix = &env.config.database_prefix;
    let databases: Vec<&str> = tenants.iter().map(|t| t.database.as_str()).collect();
    let (one, two, three) = (format!("{prefix}demo_shared"), format!("{prefix}demo_shared_2"), format!("{prefix}demo_shared_3"));
    assert_eq!(databases, vec![one.as_str(), one.as_str(), two.as_str(), two.as_str(), three.as_str()]);
    // An enterprise tenant still gets its own database.
    let own = env.provisioned(&env.slug("own"), "enterprise").await;
    assert!(own.database.ends_with(&format!("demo__{}", own.slug)), "{}", own.database);

    // Each writes its own rows; a tenant sees its schema only, not a neighbour's in its shard.
    for t in &tenants {
        let mut conn = env.as_tenant(&t.slug).await;
        sqlx::query("INSERT INTO projects (name) VALUES ($1)").bind(format!("of-{}", t.slug)).execute(&mut conn).await.unwrap();
    }
    let (a, b) = (&tenants[2], &tenants[3]);
    let mut as_a = env.as_tenant(&a.slug).await;
    let peek = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{}\".projects", b.schema))).fetch_all(&mut as_a).await;
    assert!(peek.is_err(), "a tenant reads its shard neighbour");

    // A backup of a tenant in the second shard holds its schema and rows only, and restores.
    let app = env.app();
    let taken = backup::backup(&app, &a.slug, Kind::Manual, None, "shard-backup").await.unwrap();
    assert_eq!(names_in_backup(&taken.file_path), vec![format!("of-{}", a.slug)], "its own rows only");
    sqlx::query("DELETE FROM projects").execute(&mut as_a).await.unwrap();
    drop(as_a);
    restore::restore(&app, &a.slug, taken.id, "shard-restore").await.unwrap();
    let mut as_a = env.as_tenant(&a.slug).await;
    let rows: Vec<String> = sqlx::query_scalar("SELECT name FROM projects").fetch_all(&mut as_a).await.unwrap();
    assert_eq!(rows, vec![format!("of-{}", a.slug)]);

    // A deleted tenant frees its place: the next one goes to the first shard with room.
    tenant_master::ops::delete::delete(&app, &tenants[0].slug, Some(tenants[0].id), "shard-delete", "test").await.unwrap();
    let next = env.provisioned(&env.slug("next"), "free").await;
    assert_eq!(next.database, one);
}
