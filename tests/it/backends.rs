//! The services a scale-out test needs, real ones: an S3-protocol server
//! (`moto_server`, shared through `AMBER_TEST_S3_ENDPOINT` or started per
//! test) and PostgreSQL (`AMBER_TEST_POSTGRES`, default the local server), with
//! a fresh bucket and database per test. If a service cannot be reached the
//! test fails; it never skips.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which backends an `amberd` under test uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// sled and a local directory.
    Embedded,
    /// S3 (moto) and PostgreSQL.
    S3Postgres,
}

/// Runs a backend-generic test on both backends, as `NAME::embedded` and `NAME::s3_postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::backends::Backend;
            #[tokio::test]
            async fn embedded() {
                super::$name(Backend::Embedded).await
            }
            #[tokio::test]
            async fn s3_postgres() {
                super::$name(Backend::S3Postgres).await
            }
        }
    )*};
}

pub struct S3Service {
    pub child: Option<Child>,
    pub endpoint: String,
}

impl S3Service {
    pub fn start() -> Self {
        if let Ok(endpoint) = std::env::var("AMBER_TEST_S3_ENDPOINT") {
            return Self { child: None, endpoint };
        }
        Self::start_private()
    }

    /// A server of this test's own, even where one is shared (to freeze it).
    pub fn start_private() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is needed for the S3 tests: pip install 'moto[server]'");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start on {endpoint}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child: Some(child), endpoint }
    }

    /// The environment an `amberd` needs to reach it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        let credentials = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "tests");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(credentials)
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// A new, empty bucket.
    pub async fn bucket(&self) -> String {
        let name = format!("amber-test-{:016x}", rand::random::<u64>());
        self.client().create_bucket().bucket(&name).send().await.expect("create bucket");
        name
    }
}

impl Drop for S3Service {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh database, dropped when the test ends.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-Atc", sql]).output().expect("psql is needed");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl PgDatabase {
    pub fn create() -> Self {
        let base = std::env::var("AMBER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let base = base.trim_end_matches('/').to_owned();
        let admin_url = format!("{base}/postgres");
        let name = format!("amber_test_{:016x}", rand::random::<u64>());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        Self { url: format!("{base}/{name}"), admin_url, name }
    }

    pub fn sql(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }

    /// Everything the database holds, as `pg_dump` writes it.
    pub fn dump(&self) -> Vec<u8> {
        let out = Command::new("pg_dump").arg(&self.url).output().expect("pg_dump");
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&self.admin_url, "-qAtc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

/// S3 and PostgreSQL for one test.
pub struct Services {
    pub s3: S3Service,
    pub bucket: String,
    pub pg: PgDatabase,
}

impl Services {
    pub async fn start() -> Self {
        let s3 = S3Service::start();
        let bucket = s3.bucket().await;
        Self { s3, bucket, pg: PgDatabase::create() }
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--blobs".into(),
            format!("s3://{}/amber", self.bucket),
            "--s3-path-style".into(),
            "--meta".into(),
            self.pg.url.clone(),
        ]
    }

    /// Keys of the objects under `prefix` in the bucket.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        let listed = self.s3.client().list_objects_v2().bucket(&self.bucket).prefix(prefix).send().await.unwrap();
        listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
    }

    pub async fn open_multipart_uploads(&self) -> usize {
        let listed = self.s3.client().list_multipart_uploads().bucket(&self.bucket).send().await.unwrap();
        listed.uploads().len()
    }
}
