//! A generated event of any size.

use hexidian_testkit::ids;

use crate::{Extension, Guru3Sim, Handset, Kind, Member};

/// The small example event: SIP 2001, DECT 2002 and group 1100 with both as members.
pub fn seed_example(sim: &Guru3Sim) -> Result<(), String> {
    for e in [
        Extension::new("2001", "Lena Brandt", Kind::sip()),
        Extension::new("2002", "Kiosk Nord", Kind::dect()),
        Extension::new("1100", "Infodesk", Kind::group("INF")),
    ] {
        sim.save(e)?;
    }
    sim.set_members(
        "1100",
        vec![Member::new("2001", 0), Member::new("2002", 10)],
    )?;
    Ok(())
}

/// Fills the simulator with a generated event: `n` extensions (a twentieth call groups of
/// three members each, a quarter SIP, the rest DECT, every third DECT extension with a
/// handset: IPEI and UAK from [`hexidian_testkit::ids`], the ones `omm-axi-sim --seed`
/// subscribes), plus one extension of each type hexidian only records (GSM, APP,
/// ANNOUNCEMENT, SPECIAL). Returns the numbers of (DECT, SIP, group) extensions.
pub fn seed_event(sim: &Guru3Sim, n: usize) -> Result<(usize, usize, usize), String> {
    let (mut dect, mut sip, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let number = format!("{}", 10000 + i);
        let kind = match i % 20 {
            0 => Kind::group("G"),
            1..=5 => Kind::sip(),
            _ => Kind::dect(),
        };
        let mut e = Extension::new(&number, &format!("Demo {i} – Tomás 📞"), kind);
        match e.kind {
            Kind::Group { .. } => groups.push(number.clone()),
            Kind::Sip { .. } => sip.push(number.clone()),
            _ => {
                if ids::seeded_handset(i) {
                    e.handset = Some(Handset {
                        ipei: ids::ipei(i as u32),
                        uak: ids::uak(i as u32),
                    });
                }
                dect.push(number.clone());
            }
        }
        sim.save(e)?;
    }
    for (j, g) in groups.iter().enumerate() {
        let members: Vec<Member> = dect
            .iter()
            .chain(&sip)
            .skip(j * 3)
            .take(3)
            .enumerate()
            .map(|(k, m)| Member::new(m, 5 * k as u32))
            .collect();
        sim.set_members(g, members)?;
    }
    for (number, kind) in [
        (
            "19000",
            Kind::Gsm {
                token: String::new(),
            },
        ),
        (
            "19001",
            Kind::App {
                target: "echo".into(),
            },
        ),
        (
            "19002",
            Kind::Announcement {
                audio: String::new(),
            },
        ),
        ("19003", Kind::Special),
    ] {
        sim.save(Extension::new(number, "Service", kind))?;
    }
    Ok((dect.len(), sip.len(), groups.len()))
}
