//! A real SAML IdP for the tests: Debian's SimpleSAMLphp under `php -S` on 127.0.0.1, its
//! whole config (config.php, authsources, hosted IdP and remote SP metadata, a fresh IdP key)
//! generated into a temp dir. `php -S` forks workers, so it runs in its own process group and
//! the group is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::sso_common::{free_port, wait_for};

pub const SSP_WWW: &str = "/usr/share/simplesamlphp/www";
pub const USER: &str = "student1";
pub const PASSWORD: &str = "pass";

/// How the IdP treats our SP.
#[derive(Debug, Clone)]
pub struct IdpOptions {
    pub sign_response: bool,
    pub sign_assertion: bool,
    pub encrypt_assertion: bool,
}

impl Default for IdpOptions {
    fn default() -> Self {
        IdpOptions {
            sign_response: true,
            sign_assertion: true,
            encrypt_assertion: false,
        }
    }
}

pub struct Idp {
    pub dir: TempDir,
    pub port: u16,
    child: Child,
    /// The IdP's signing key and certificate (PEM), for tests that forge with its key.
    pub key_file: PathBuf,
    pub cert_file: PathBuf,
}

/// A self-signed RSA pair made with the openssl command line.
pub fn make_keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}.test"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed (scripts/install-test-deps.sh)");
    assert!(status.success(), "openssl req failed");
    (key, cert)
}

fn php_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Idp {
    /// Starts the IdP for the SP at `sp_base` (e.g. `http://127.0.0.1:PORT`), whose entity ID is
    /// `sp_entity_id` and certificate `sp_cert` (for encryption and its logout signatures).
    pub fn start(sp_base: &str, sp_entity_id: &str, sp_cert: &Path, opts: &IdpOptions) -> Idp {
        assert!(
            Path::new(SSP_WWW).is_dir(),
            "SimpleSAMLphp is not installed at {SSP_WWW} (run scripts/install-test-deps.sh)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "config", "metadata", "cert", "log", "data", "tmp", "sessions",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let (key_file, cert_file) = make_keypair(&d.join("cert"), "idp");
        std::fs::copy(sp_cert, d.join("cert/sp.crt")).unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}/");
        let path = |s: &str| php_str(&format!("{}/{s}", d.display()));
        std::fs::write(
            d.join("config/config.php"),
            format!(
                "<?php\n$config = [\n\
                 'baseurlpath' => {base},\n\
                 'certdir' => {cert},\n'loggingdir' => {log},\n'datadir' => {data},\n\
                 'tempdir' => {tmp},\n'metadatadir' => {md},\n\
                 'secretsalt' => 'test-salt-not-secret-0123456789',\n\
                 'auth.adminpassword' => 'unused-admin-password',\n\
                 'technicalcontact_name' => 'Test', 'technicalcontact_email' => 'test@example.org',\n\
                 'timezone' => 'UTC',\n'enable.saml20-idp' => true,\n'store.type' => 'phpsession',\n\
                 'session.cookie.secure' => false,\n'session.cookie.samesite' => null,\n\
                 'logging.handler' => 'file', 'logging.logfile' => 'simplesamlphp.log',\n\
                 'logging.level' => SimpleSAML\\Logger::DEBUG,\n\
                 'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true, 'admin' => true],\n\
                 'showerrors' => true, 'errorreporting' => false,\n];\n",
                base = php_str(&base),
                cert = path("cert/"),
                log = path("log/"),
                data = path("data/"),
                tmp = path("tmp"),
                md = path("metadata/"),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("config/authsources.php"),
            format!(
                "<?php\n$config = [\n'admin' => ['core:AdminPassword'],\n\
                 'example-userpass' => ['exampleauth:UserPass',\n\
                 '{USER}:{PASSWORD}' => ['uid' => ['{USER}'], 'mail' => ['{USER}@example.org'], \
                 'givenName' => ['Stu'], 'sn' => ['Dent']],\n],\n];\n"
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("metadata/saml20-idp-hosted.php"),
            "<?php\n$metadata['__DYNAMIC:1__'] = [\n'host' => '__DEFAULT__',\n\
             'privatekey' => 'idp.key', 'certificate' => 'idp.crt',\n\
             'auth' => 'example-userpass',\n\
             'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',\n\
             'NameIDFormat' => 'urn:oasis:names:tc:SAML:2.0:nameid-format:transient',\n];\n",
        )
        .unwrap();
        let b = |v: bool| if v { "true" } else { "false" };
        std::fs::write(
            d.join("metadata/saml20-sp-remote.php"),
            format!(
                "<?php\n$metadata[{entity}] = [\n\
                 'AssertionConsumerService' => {acs},\n\
                 'SingleLogoutService' => [['Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', 'Location' => {slo}]],\n\
                 'certificate' => 'sp.crt',\n\
                 'saml20.sign.response' => {sr},\n'saml20.sign.assertion' => {sa},\n\
                 'assertion.encryption' => {enc},\n\
                 'sign.logout' => true, 'redirect.sign' => true, 'redirect.validate' => true,\n\
                 'validate.logout' => true,\n\
                 'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',\n\
                 'NameIDFormat' => 'urn:oasis:names:tc:SAML:2.0:nameid-format:transient',\n];\n",
                entity = php_str(sp_entity_id),
                acs = php_str(&format!("{sp_base}/auth/saml/acs")),
                slo = php_str(&format!("{sp_base}/auth/saml/slo")),
                sr = b(opts.sign_response),
                sa = b(opts.sign_assertion),
                enc = b(opts.encrypt_assertion),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("log/php.log")).unwrap();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("php")
                .arg("-d")
                .arg(format!(
                    "session.save_path={}",
                    d.join("sessions").display()
                ))
                .arg("-S")
                .arg(format!("127.0.0.1:{port}"))
                .arg("-t")
                .arg(SSP_WWW)
                .env("SIMPLESAMLPHP_CONFIG_DIR", d.join("config"))
                .env("PHP_CLI_SERVER_WORKERS", "2")
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("php must be installed (scripts/install-test-deps.sh)")
        };
        let idp = Idp {
            dir,
            port,
            child,
            key_file,
            cert_file,
        };
        wait_for("SimpleSAMLphp answers", Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        idp
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn metadata_url(&self) -> String {
        self.url("/saml2/idp/metadata.php")
    }

    pub fn entity_id(&self) -> String {
        self.metadata_url()
    }

    /// The IdP's log, for a failing test's message.
    pub fn log(&self) -> String {
        let d = self.dir.path().join("log");
        let php = std::fs::read_to_string(d.join("php.log")).unwrap_or_default();
        let ssp = std::fs::read_to_string(d.join("simplesamlphp.log")).unwrap_or_default();
        format!("{php}\n{ssp}")
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        // The whole group: php -S and its forked workers.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
