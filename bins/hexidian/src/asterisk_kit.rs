//! `hexidian asterisk-config`: the Asterisk configuration kit, filled from hexidian's own
//! config file so that the two never drift. The templates are the files in `kit/`; the kit
//! shipped in `examples/asterisk/` is this output for `examples/hexidian.toml` (a test keeps
//! them equal).

use std::path::Path;

use crate::config::{FileConfig, secret};

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitFile {
    /// File name inside the kit folder.
    pub name: &'static str,
    /// Contents.
    pub text: String,
    /// Holds a secret (written with mode 0600).
    pub secret: bool,
}

const TEMPLATES: &[(&str, &str, bool)] = &[
    (
        "extensions.conf",
        include_str!("../kit/extensions.conf"),
        false,
    ),
    ("pjsip.conf", include_str!("../kit/pjsip.conf"), false),
    ("sorcery.conf", include_str!("../kit/sorcery.conf"), false),
    (
        "extconfig.conf",
        include_str!("../kit/extconfig.conf"),
        false,
    ),
    (
        "res_pgsql.conf",
        include_str!("../kit/res_pgsql.conf"),
        true,
    ),
    (
        "hexidian-secrets.conf",
        include_str!("../kit/hexidian-secrets.conf"),
        true,
    ),
    (
        "hexidian-roles.sql",
        include_str!("../kit/hexidian-roles.sql"),
        false,
    ),
];

/// Placeholder written where a secret goes when secrets are not filled in.
pub const PLACEHOLDER: &str = "change-me";

fn digits(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 16 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {v:?}: 1 to 16 digits"));
    }
    Ok(())
}

/// A name that goes into a config file or SQL identifier unquoted by the reader.
fn word(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty()
        || v.len() > 63
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        return Err(format!("{what} {v:?}: 1 to 63 of A-Z a-z 0-9 - _"));
    }
    Ok(())
}

/// A value on one config line: no line breaks, no `;` (a comment in Asterisk's files).
fn line_value(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 200 || v.chars().any(|c| c.is_control() || c == ';') {
        return Err(format!(
            "{what}: 1 to 200 characters, no control characters or ';'"
        ));
    }
    Ok(())
}

/// Fills the kit from `file`. `source` names the config file in the generated headers.
/// Secrets (the webhook key, the Asterisk role's password) are resolved only when
/// `with_secrets`; otherwise they are [`PLACEHOLDER`].
pub fn generate(
    file: &FileConfig,
    source: &str,
    with_secrets: bool,
) -> Result<Vec<KitFile>, String> {
    let pbx = &file.pbx;
    let template = pbx.template()?;
    let pg: tokio_postgres::Config = file
        .postgres_url()?
        .parse()
        .map_err(|e| format!("postgres url: {e}"))?;
    let location = match pg.get_hosts().first() {
        // res_config_pgsql warns at start about a missing dbhost or dbsock key: the unused
        // one is written empty
        Some(tokio_postgres::config::Host::Tcp(h)) => {
            line_value("postgres host", h)?;
            format!("dbhost={h}\ndbsock=")
        }
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(dir)) => {
            let d = dir.display().to_string();
            line_value("postgres socket directory", &d)?;
            format!(
                "dbhost=                     ; empty: the socket below\ndbsock={d}                ; Unix socket directory"
            )
        }
        _ => "dbhost=localhost\ndbsock=".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let db = pg.get_dbname().unwrap_or("asterisk");
    word("postgres dbname", db)?;
    let hx_user = pg.get_user().unwrap_or("hexidian");
    word("postgres user", hx_user)?;
    let ast_user = pbx.asterisk_db_user.as_deref().unwrap_or("asterisk");
    word("[pbx] asterisk_db_user", ast_user)?;
    let ast_password = match (
        &pbx.asterisk_db_password_env,
        &pbx.asterisk_db_password_file,
    ) {
        // an empty dbpass sends no password (without the key Asterisk warns and sends
        // "asterisk")
        (None, None) => {
            "dbpass=                     ; none: peer, trust or certificate authentication"
                .to_owned()
        }
        _ if !with_secrets => format!("dbpass={PLACEHOLDER}          ; --with-secrets fills it in"),
        (env, f) => {
            let p = secret("asterisk database password", env, f)?;
            line_value("asterisk database password", &p)?;
            format!("dbpass={p}")
        }
    };

    let sip_bind = pbx.sip_bind.as_deref().unwrap_or("0.0.0.0:5060");
    sip_bind
        .parse::<std::net::SocketAddr>()
        .map_err(|e| format!("[pbx] sip_bind {sip_bind:?}: {e}"))?;
    let extra_transport = match file
        .pbx
        .premium
        .as_ref()
        .and_then(|p| p.transport.as_deref())
    {
        Some(t) => {
            word("[pbx.premium] transport", t)?;
            format!(
                "\n; the transport of premium users ([pbx.premium] transport): set its bind\n\
                 ;[{t}]\n;type=transport\n;protocol=udp\n;bind=0.0.0.0:5062\n"
            )
        }
        None => String::new(),
    };
    let extra_context = match file
        .pbx
        .premium
        .as_ref()
        .and_then(|p| p.context.as_deref())
        .filter(|c| *c != template.context)
    {
        Some(c) => {
            word("[pbx.premium] context", c)?;
            format!(
                "\n; Premium users ([pbx.premium] context) route like everybody else; add their extras here.\n\
                 [{c}]\nexten => _X.,1,Goto(hexidian-route,${{EXTEN}},1)\n"
            )
        }
        None => String::new(),
    };

    let unbound = file.unbound.as_ref();
    let token_prefix = unbound
        .and_then(|u| u.token_prefix.as_deref())
        .unwrap_or("9955");
    digits("[unbound] token_prefix", token_prefix)?;
    let webhook_url = match unbound {
        Some(u) => {
            let addr: std::net::SocketAddr = u
                .listen
                .parse()
                .map_err(|e| format!("[unbound] listen {:?}: {e}", u.listen))?;
            if addr.ip().is_unspecified() {
                return Err(format!(
                    "[unbound] listen {addr}: the kit needs the address Asterisk calls; \
                     listen on that address instead of {}",
                    addr.ip()
                ));
            }
            format!("http://{addr}/token-call")
        }
        None => "http://127.0.0.1:4242/token-call   ; [unbound] is not configured".to_owned(),
    };
    let key = match unbound {
        Some(u) if with_secrets && (u.key_env.is_some() || u.key_file.is_some()) => {
            let k = secret("webhook key", &u.key_env, &u.key_file)?;
            line_value("webhook key", &k)?;
            k
        }
        _ => PLACEHOLDER.to_owned(),
    };

    let (dialout_line, dialout_action) = match pbx.dialout_prefix.as_deref() {
        None | Some("") => (
            " ; no dial-out: [pbx] dialout_prefix is not set".to_owned(),
            "exten => _X.,1,Hangup(21)".to_owned(),
        ),
        Some(p) => {
            digits("[pbx] dialout_prefix", p)?;
            let action = match pbx.dialout_endpoint.as_deref() {
                Some(e) => {
                    word("[pbx] dialout_endpoint", e)?;
                    format!(
                        "exten => _X.,1,Dial(PJSIP/${{EXTEN}}@{e},${{HX_RING_TIMEOUT}})\n \
                         same => n,Goto(hexidian-status,${{DIALSTATUS}},1)"
                    )
                }
                None => "; [pbx] dialout_endpoint is not set: say here how calls leave, e.g.\n\
                         ; exten => _X.,1,Dial(PJSIP/${EXTEN}@pstn-gateway,60)\n\
                         exten => _X.,1,Hangup(34)"
                    .to_owned(),
            };
            (
                format!(
                    " same => n,GotoIf($[\"${{EXTEN:0:{}}}\" = \"{p}\"]?hexidian-dialout-check,${{EXTEN}},1)",
                    p.len()
                ),
                action,
            )
        }
    };
    let positive = |what: &str, v: Option<u32>, default: u32, max: u32| {
        let v = v.unwrap_or(default);
        if v == 0 || v > max {
            return Err(format!("[pbx] {what}: 1 to {max}"));
        }
        Ok(v.to_string())
    };
    let ring = positive("ring_timeout_s", pbx.ring_timeout_s, 60, 3600)?;
    let cg = positive("callgroup_timeout_s", pbx.callgroup_timeout_s, 180, 3600)?;
    let hops = positive("max_forward_hops", pbx.max_forward_hops, 5, 20)?;

    let values: Vec<(&str, String)> = vec![
        ("@@SOURCE@@", source.to_owned()),
        ("@@PG_LOCATION@@", location),
        ("@@PG_PORT@@", port.to_string()),
        ("@@PG_DB@@", db.to_owned()),
        ("@@HX_USER@@", hx_user.to_owned()),
        ("@@AST_USER@@", ast_user.to_owned()),
        ("@@AST_PASSWORD@@", ast_password),
        ("@@SIP_BIND@@", sip_bind.to_owned()),
        ("@@EXTRA_TRANSPORT@@", extra_transport),
        ("@@CONTEXT@@", template.context.clone()),
        ("@@TEMP_CONTEXT@@", template.temp_context),
        ("@@EXTRA_CONTEXT@@", extra_context),
        ("@@WEBHOOK_URL@@", webhook_url),
        ("@@TOKEN_PREFIX@@", token_prefix.to_owned()),
        ("@@DIALOUT_LINE@@", dialout_line),
        ("@@DIALOUT_ACTION@@", dialout_action),
        ("@@RING_TIMEOUT@@", ring),
        ("@@CG_TIMEOUT@@", cg),
        ("@@MAX_HOPS@@", hops),
        ("@@HX_KEY@@", key),
    ];
    TEMPLATES
        .iter()
        .map(|(name, t, secret)| {
            let mut text = (*t).to_owned();
            for (k, v) in &values {
                text = text.replace(k, v);
            }
            if let Some(i) = text.find("@@") {
                return Err(format!("{name}: unfilled placeholder at byte {i}"));
            }
            Ok(KitFile {
                name,
                text,
                secret: *secret,
            })
        })
        .collect()
}

/// Writes the kit into `dir` (created if missing); files with secrets get mode 0600.
pub fn write(files: &[KitFile], dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for f in files {
        let path = dir.join(f.name);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if f.secret {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut out = opts
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::io::Write::write_all(&mut out, f.text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Every sound file `Playback()` names in a dialplan (`&`-separated lists split).
pub fn prompts(dialplan: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in dialplan.lines() {
        let code = line.split(';').next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("Playback(") {
            let args = &rest[i + "Playback(".len()..];
            let end = args.find(')').unwrap_or(args.len());
            let files = args[..end].split(',').next().unwrap_or_default();
            for f in files.split('&') {
                let f = f.trim();
                if !f.is_empty() && !out.iter().any(|x| x == f) {
                    out.push(f.to_owned());
                }
            }
            rest = &args[end..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn example() -> FileConfig {
        FileConfig::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hexidian.toml"),
        )
        .unwrap()
    }

    #[test]
    fn the_shipped_kit_is_what_the_example_config_generates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/asterisk");
        for f in generate(&example(), "examples/hexidian.toml", false).unwrap() {
            let shipped = std::fs::read_to_string(dir.join(f.name))
                .unwrap_or_else(|e| panic!("examples/asterisk/{}: {e}", f.name));
            assert!(
                shipped == f.text,
                "examples/asterisk/{} differs from `hexidian asterisk-config --config \
                 examples/hexidian.toml`; regenerate it",
                f.name
            );
        }
    }

    #[test]
    fn every_prompt_the_dialplan_plays_is_named_once_and_plainly() {
        let files = generate(&example(), "x", false).unwrap();
        let ext = files.iter().find(|f| f.name == "extensions.conf").unwrap();
        let prompts = prompts(&ext.text);
        assert!(prompts.contains(&"please-try-call-later".to_owned()));
        assert!(!prompts.iter().any(|p| p == "an-error-has-occured"));
    }

    #[test]
    fn hostile_values_are_refused_not_written() {
        let mut c = example();
        c.pbx.dialout_prefix = Some("0;evil".into());
        assert!(
            generate(&c, "x", false)
                .unwrap_err()
                .contains("dialout_prefix")
        );
        let mut c = example();
        c.pbx.asterisk_db_user = Some("a\"; DROP ROLE x; --".into());
        assert!(
            generate(&c, "x", false)
                .unwrap_err()
                .contains("asterisk_db_user")
        );
        let mut c = example();
        c.pbx.dialout_prefix = Some("0".into());
        c.pbx.dialout_endpoint = Some("pstn".into());
        let ext = generate(&c, "x", false).unwrap();
        let text = &ext
            .iter()
            .find(|f| f.name == "extensions.conf")
            .unwrap()
            .text;
        assert!(text.contains("\"${EXTEN:0:1}\" = \"0\""));
        assert!(text.contains("Dial(PJSIP/${EXTEN}@pstn,"));
    }
}
