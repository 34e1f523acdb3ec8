//! The SDP text the core reads from clients and writes to them: limits on
//! what a client may offer, its DTLS identity, and candidates in every
//! media section.

use str0m::change::SdpOffer;

use crate::api::SfuError;

/// Parses a client's offer within the limits: its size, and how many media
/// sections it carries (a peer offering 165 audio sections gets an error,
/// not 165 tracks).
pub(super) fn checked_offer(sdp: &str, max_bytes: usize, max_sections: usize) -> Result<SdpOffer, SfuError> {
    if sdp.len() > max_bytes {
        return Err(SfuError::InvalidSdp(format!("larger than {max_bytes} bytes")));
    }
    let sections = sdp.lines().filter(|l| l.starts_with("m=")).count();
    if sections > max_sections {
        return Err(SfuError::TooManyTracks { max: max_sections });
    }
    #[cfg(any(test, feature = "fault-injection"))]
    if sdp.contains("a=x-teleconsult-inject-panic") {
        // Tests prove that a fault here costs only this participant.
        panic!("injected fault in SDP handling");
    }
    SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))
}

/// The first `a=fingerprint:` line of an SDP, to recognise its DTLS identity.
pub(super) fn fingerprint_of(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=fingerprint:").map(|f| f.trim().to_ascii_lowercase()))
}

/// The SDP with the candidates repeated in every live media section.
///
/// str0m writes them in the first section only, which is enough for a
/// client that bundles; but a client on a non-bundling policy (aiortc's
/// default) reads each section's own candidates, and without them gets no
/// media on its second and later tracks. Rejected sections (port 0) are
/// left as they are.
pub(super) fn candidates_in_every_section(sdp: &str) -> String {
    let newline = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.lines().collect();
    let candidates: Vec<&str> =
        lines.iter().copied().filter(|l| l.starts_with("a=candidate:") || *l == "a=end-of-candidates").collect();
    let mut out = String::with_capacity(sdp.len() + candidates.iter().map(|c| c.len() + 2).sum::<usize>() * 4);
    if candidates.is_empty() {
        return sdp.to_string();
    }
    // Split into the session part and the media sections.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in &lines {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(last) = sections.last_mut() {
            last.push(line);
        }
    }
    for (i, section) in sections.iter().enumerate() {
        let is_media = i > 0;
        let rejected = section.first().is_some_and(|m| m.split_whitespace().nth(1) == Some("0"));
        let has_own = section.iter().any(|l| l.starts_with("a=candidate:"));
        for line in section {
            out.push_str(line);
            out.push_str(newline);
        }
        if is_media && !rejected && !has_own {
            for c in &candidates {
                out.push_str(c);
                out.push_str(newline);
            }
        }
    }
    out
}

/// The SDP with every candidate on a bound address rewritten to the
/// address announced for it (`announce`: bound → public, for 1:1 NAT).
///
/// str0m matches an incoming datagram's destination against its host
/// candidates, and behind 1:1 NAT datagrams arrive on the bound address; so
/// str0m keeps the bound address and only what the client reads changes.
pub(super) fn announce_addresses(sdp: &str, announce: &[(std::net::IpAddr, std::net::IpAddr)]) -> String {
    if announce.is_empty() {
        return sdp.to_string();
    }
    let newline = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.lines() {
        if line.starts_with("a=candidate:") {
            // foundation component transport priority address port typ …
            let mut fields: Vec<&str> = line.split(' ').collect();
            let public = fields
                .get(4)
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .and_then(|ip| announce.iter().find(|(bound, _)| *bound == ip))
                .map(|(_, public)| public.to_string());
            if let Some(public) = &public {
                fields[4] = public;
                out.push_str(&fields.join(" "));
                out.push_str(newline);
                continue;
            }
        }
        out.push_str(line);
        out.push_str(newline);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_addresses_replace_bound_ones() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n\
a=candidate:2 1 udp 2130706175 127.0.0.1 50000 typ host\r\n";
        let map = [("10.0.0.5".parse().unwrap(), "203.0.113.7".parse().unwrap())];
        let out = announce_addresses(sdp, &map);
        assert!(out.contains("a=candidate:1 1 udp 2130706431 203.0.113.7 50000 typ host\r\n"), "{out}");
        assert!(out.contains("127.0.0.1 50000"), "an address without a public one stays: {out}");
        assert!(!out.contains("10.0.0.5"));
        assert_eq!(announce_addresses(sdp, &[]), sdp);
    }

    const BUNDLED: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
a=end-of-candidates\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n";

    #[test]
    fn every_live_section_gets_the_candidates() {
        let fixed = candidates_in_every_section(BUNDLED);
        let sections: Vec<&str> = fixed.split("m=").skip(1).collect();
        assert_eq!(sections.len(), 3);
        assert_eq!(sections[0].matches("a=candidate:").count(), 1, "the first keeps its own, once");
        assert_eq!(sections[1].matches("a=candidate:").count(), 1);
        assert!(sections[1].contains("a=end-of-candidates"));
        assert_eq!(sections[2].matches("a=candidate:").count(), 0, "a rejected section stays bare");
        assert!(fixed.ends_with("\r\n") && !fixed.contains("\n\n"));
        assert_eq!(candidates_in_every_section("v=0\r\n"), "v=0\r\n");
    }

    #[test]
    fn offers_are_bounded() {
        let many = format!("v=0\r\n{}", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(165));
        assert!(matches!(checked_offer(&many, 1 << 20, 4), Err(SfuError::TooManyTracks { max: 4 })));
        assert!(matches!(checked_offer(&"x".repeat(40_000), 32 * 1024, 4), Err(SfuError::InvalidSdp(_))));
        assert!(matches!(checked_offer("not sdp", 1024, 4), Err(SfuError::InvalidSdp(_))));
    }
}
