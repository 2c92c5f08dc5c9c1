//! The flags of `zpanel docker` that docker users type from habit: `-p [IP:]HOST:CONT[/proto]`,
//! `-m 64m`, `--cpus 1.5`, `-e K=V`, `-l K=V`, `--restart on-failure:3` and `--since 10m`,
//! checked here so a typo is refused before anything reaches the host.

use std::net::IpAddr;

use zpanel_proto::PortBinding;

/// `-p`: `CONT`, `HOST:CONT`, `IP:HOST:CONT` or `IP::CONT` (any host port), each with an
/// optional `/tcp`, `/udp` or `/sctp`; an IPv6 address goes in brackets (`[::1]:8080:80`).
pub fn port(text: &str) -> Result<PortBinding, String> {
    let invalid = |why: &str| format!("port {text:?}: {why}; write [IP:]HOST:CONTAINER[/tcp|udp]");
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, protocol @ ("tcp" | "udp" | "sctp"))) => (ports, protocol),
        Some(_) => return Err(invalid("the protocol is not tcp, udp or sctp")),
        None => (text, "tcp"),
    };
    let (rest, container) = match ports.rsplit_once(':') {
        Some((rest, container)) => (Some(rest), container),
        None => (None, ports),
    };
    let container_port = match container {
        "" => return Err(invalid("no container port")),
        port => port_number(port).ok_or_else(|| invalid("the container port is not 1 to 65535"))?,
    };
    let (host_ip, host) = match rest.map(|rest| rest.rsplit_once(':').unwrap_or(("", rest))) {
        None => ("", ""),
        Some((ip, host)) => (ip, host),
    };
    let host_port = match host {
        "" if rest.is_some() && host_ip.is_empty() => return Err(invalid("no host port")),
        "" => 0,
        host => port_number(host).ok_or_else(|| invalid("the host port is not 1 to 65535"))?,
    };
    let host_ip = host_ip.trim_start_matches('[').trim_end_matches(']');
    if !host_ip.is_empty() && host_ip.parse::<IpAddr>().is_err() {
        return Err(invalid("the host address is not an IP address"));
    }
    Ok(PortBinding {
        host_port,
        container_port,
        protocol: protocol.into(),
        host_ip: host_ip.into(),
    })
}

fn port_number(text: &str) -> Option<u32> {
    text.parse::<u16>()
        .ok()
        .filter(|&port| port > 0)
        .map(u32::from)
}

/// `-m`: bytes, or a number with `k`, `m`, `g` or `t` (binary units, as docker reads them:
/// `64m` is 64 MiB), optionally followed by `b` or `ib` (`512mb`, `1GiB`, `1.5g`).
pub fn memory(text: &str) -> Result<u64, String> {
    let invalid = || format!("memory {text:?} is not a size: write 64m, 512m, 1g or bytes");
    let lower = text.trim().to_ascii_lowercase();
    let unit_start = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(unit_start);
    let prefix = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let shift = match prefix {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(invalid()),
    };
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let bytes = (value * (1u64 << shift) as f64).round();
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as u64)
}

/// `--cpus`: how many CPUs, more than 0 (`0.5`, `1.5`, `2`).
pub fn cpus(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|cpus| cpus.is_finite() && *cpus > 0.0)
        .ok_or_else(|| format!("cpus {text:?} is not a number of CPUs above 0 (0.5, 1.5, 2)"))
}

/// `-e`: `KEY=VALUE`, or `KEY` alone for this shell's value of it (as docker does).
pub fn env(text: &str) -> Result<String, String> {
    env_entry(text, |key| std::env::var(key).ok())
}

fn env_entry(text: &str, local: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    match text.split_once('=') {
        Some(("", _)) => Err(format!("environment {text:?} has no name: write KEY=VALUE")),
        Some(_) => Ok(text.into()),
        None if text.is_empty() => Err("an empty environment variable: write KEY=VALUE".into()),
        None => local(text)
            .map(|value| format!("{text}={value}"))
            .ok_or_else(|| format!("environment {text:?} is not set here: write {text}=VALUE")),
    }
}

/// `-l`: `KEY=VALUE`, or `KEY` alone for an empty value.
pub fn label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        return Err(format!("label {text:?} has no name: write KEY=VALUE"));
    }
    Ok((key.into(), value.into()))
}

/// `--restart`: `no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`.
pub fn restart(text: &str) -> Result<String, String> {
    let valid = match text.split_once(':') {
        None => matches!(text, "no" | "always" | "unless-stopped" | "on-failure"),
        Some(("on-failure", retries)) => retries.parse::<u32>().is_ok(),
        Some(_) => false,
    };
    if valid {
        Ok(text.into())
    } else {
        Err(format!(
            "restart policy {text:?} is not no, always, unless-stopped, on-failure or on-failure:N"
        ))
    }
}

/// `--since` relative to `now`: unix seconds, a duration back (`10m`, `2h`) or an RFC 3339
/// time.
pub fn since_at(text: &str, now: i64) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(unix) if unix >= 0 => Ok(unix),
        Ok(_) => Err(format!("since {text:?} is before 1970")),
        Err(_) => crate::audit::since_at(text, now),
    }
}

/// [`since_at`] from now, for the command line.
pub fn since(text: &str) -> Result<i64, String> {
    since_at(text, zpanel_shared::unix_now())
}

/// A port binding, for tests.
#[cfg(test)]
pub fn binding(host_ip: &str, host_port: u32, container_port: u32, protocol: &str) -> PortBinding {
    PortBinding {
        host_port,
        container_port,
        protocol: protocol.into(),
        host_ip: host_ip.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_read_as_docker_reads_them() {
        assert_eq!(port("80"), Ok(binding("", 0, 80, "tcp")));
        assert_eq!(port("8080:80"), Ok(binding("", 8080, 80, "tcp")));
        assert_eq!(port("8080:80/udp"), Ok(binding("", 8080, 80, "udp")));
        assert_eq!(
            port("127.0.0.1:8080:80"),
            Ok(binding("127.0.0.1", 8080, 80, "tcp"))
        );
        assert_eq!(
            port("127.0.0.1::80"),
            Ok(binding("127.0.0.1", 0, 80, "tcp"))
        );
        assert_eq!(
            port("[::1]:8080:80/sctp"),
            Ok(binding("::1", 8080, 80, "sctp"))
        );
    }

    #[test]
    fn bad_port_specs_say_what_is_wrong() {
        for (spec, why) in [
            ("", "no container port"),
            ("8080:", "no container port"),
            ("8080:0", "container port is not 1 to 65535"),
            ("70000:80", "not 1 to 65535"),
            (":80", "no host port"),
            ("80/icmp", "not tcp, udp or sctp"),
            ("web:8080:80", "not an IP address"),
            ("8000-8010:80", "not 1 to 65535"),
        ] {
            let error = port(spec).expect_err(spec);
            assert!(error.contains(why), "{spec}: {error}");
            assert!(error.contains("[IP:]HOST:CONTAINER"), "{error}");
        }
    }

    #[test]
    fn memory_sizes_are_binary_units() {
        assert_eq!(memory("64m"), Ok(64 << 20));
        assert_eq!(memory("64M"), Ok(64 << 20));
        assert_eq!(memory("512mb"), Ok(512 << 20));
        assert_eq!(memory("1g"), Ok(1 << 30));
        assert_eq!(memory("1GiB"), Ok(1 << 30));
        assert_eq!(memory("1.5g"), Ok(3 << 29));
        assert_eq!(memory("100k"), Ok(100 << 10));
        assert_eq!(memory("6291456"), Ok(6 << 20));
        assert_eq!(memory("2t"), Ok(2 << 40));
        for bad in ["", "m", "0", "-1m", "64x", "1..5g", "64 m"] {
            assert!(memory(bad).unwrap_err().contains("not a size"), "{bad}");
        }
    }

    #[test]
    fn cpus_are_a_positive_number() {
        assert_eq!(cpus("1.5"), Ok(1.5));
        assert_eq!(cpus("2"), Ok(2.0));
        for bad in ["0", "-1", "NaN", "inf", "two"] {
            assert!(cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_entries_take_a_local_value_when_only_named() {
        let local = |key: &str| (key == "HOME").then(|| "/root".to_string());
        assert_eq!(env_entry("A=1", local), Ok("A=1".into()));
        assert_eq!(env_entry("A=", local), Ok("A=".into()));
        assert_eq!(env_entry("A=b=c", local), Ok("A=b=c".into()));
        assert_eq!(env_entry("HOME", local), Ok("HOME=/root".into()));
        assert!(
            env_entry("UNSET", local)
                .unwrap_err()
                .contains("not set here")
        );
        assert!(env_entry("=1", local).unwrap_err().contains("no name"));
        assert!(env_entry("", local).is_err());
    }

    #[test]
    fn labels_and_restart_policies() {
        assert_eq!(label("app=web"), Ok(("app".into(), "web".into())));
        assert_eq!(label("flag"), Ok(("flag".into(), String::new())));
        assert!(label("=x").is_err());
        for good in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:3",
        ] {
            assert_eq!(restart(good), Ok(good.to_string()));
        }
        for bad in ["sometimes", "on-failure:", "on-failure:x", "always:2"] {
            assert!(restart(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since_is_unix_seconds_a_duration_back_or_a_time() {
        let now = 1_800_000_000;
        assert_eq!(since_at("1700000000", now), Ok(1_700_000_000));
        assert_eq!(since_at("0", now), Ok(0));
        assert_eq!(since_at("10m", now), Ok(now - 600));
        assert_eq!(since_at("2h", now), Ok(now - 7200));
        assert_eq!(since_at("1970-01-01T00:01:00Z", now), Ok(60));
        assert!(since_at("-5", now).is_err());
        assert!(since_at("soon", now).is_err());
    }
}
