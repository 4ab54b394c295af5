//! The fault timeline, one tick per second of the fault phase (`s` = seconds since it began):
//!
//! | when (s) | what |
//! |---|---|
//! | every 30 (30, 60, …) | switch both zerodowns: Consul tags flipped instance by instance in random order 20 ms apart; the upstreams file rewritten |
//! | every 10, at 3 | SIGHUP to both zerodowns |
//! | every 20, at 7 | SIGKILL one demo-backend (round robin over the six); its Consul check critical 1 s later |
//! | every 20, at 12 | that instance restarted on the same port; its check passing again |
//! | every 60, 27-33 | Consul outage (listener closed, connections dropped): the switch at 30 happens during it |
//! | every 60, 45-49 | an index anomaly, in turn: snapshot restore to half the index; `X-Consul-Index: 0` on the next 3 answers; `500 No cluster leader` for 4 s |
//! | every 60, 40-48 | the upstreams file holds garbage (not TOML), then the right content again |

use std::time::Duration;

use rustix::process::Signal;
use zerodown_testkit::{random_order, CheckStatus, Fault, Times};

use crate::setup::World;

pub async fn run(world: &mut World, secs: u64) {
    let begin = tokio::time::Instant::now();
    let mut victim: Option<usize> = None;
    let mut next_victim = 0usize;
    for s in 1..=secs {
        tokio::time::sleep_until(begin + Duration::from_secs(s)).await;
        if s % 30 == 0 && s < secs {
            switch(world).await;
        }
        if s % 10 == 3 {
            for t in &world.targets {
                crate::procs::signal(t.pid, Signal::HUP);
            }
            world.events.push(None, "sighup", "SIGHUP to both");
        }
        match s % 20 {
            7 if victim.is_none() => {
                let i = next_victim % world.instances.len();
                next_victim += 1;
                if let Some(mut c) = world.instances[i].child.take() {
                    crate::setup::kill(&mut c);
                }
                victim = Some(i);
                let detail = format!("{} ({})", world.instances[i].id, world.instances[i].http);
                world.events.push(None, "kill", detail);
            }
            8 => {
                if let Some(i) = victim {
                    world
                        .consul
                        .set_check(&world.instances[i].id, CheckStatus::Critical);
                    let id = world.instances[i].id.clone();
                    world.events.push(Some(0), "check critical", id);
                }
            }
            12 => {
                if let Some(i) = victim.take() {
                    restart(world, i).await;
                }
            }
            _ => {}
        }
        match s % 60 {
            27 => {
                let _ = world.consul.outage(true).await;
                world.events.push(Some(0), "consul down", "listener closed");
            }
            33 => {
                let _ = world.consul.outage(false).await;
                world.events.push(Some(0), "consul up", "listener back");
            }
            40 => {
                let _ = world.write_upstreams_raw("[[instances]\nthis is = not toml at all\n");
                world
                    .events
                    .push(Some(1), "garbage", "upstreams file: garbage");
            }
            45 => index_fault(world, s / 60),
            48 => {
                let _ = world.write_upstreams();
                world.events.push(Some(1), "fixed", "upstreams file: fixed");
            }
            49 => {
                world.consul.clear_faults();
            }
            _ => {}
        }
    }
    if let Some(i) = victim.take() {
        restart(world, i).await;
    }
    world.consul.clear_faults();
    let _ = world.consul.outage(false).await;
}

fn index_fault(world: &World, n: u64) {
    let detail = match n % 3 {
        0 => {
            let to = (world.consul.index() / 2).max(1);
            world.consul.snapshot_restore(to);
            format!("snapshot restore: index back to {to}")
        }
        1 => {
            world.consul.inject(Fault::IndexZero, Times::Next(3));
            "X-Consul-Index: 0 on the next 3 answers".to_string()
        }
        _ => {
            world.consul.inject(Fault::NO_LEADER, Times::Always);
            "500 No cluster leader for 4 s".to_string()
        }
    };
    world.events.push(Some(0), "index fault", detail);
}

async fn restart(world: &mut World, i: usize) {
    let (addr, version) = (world.instances[i].http, world.instances[i].version);
    match crate::setup::spawn_backend(&world.zerodown, &world.out, addr, version).await {
        Ok(c) => {
            world.instances[i].child = Some(c);
            world
                .consul
                .set_check(&world.instances[i].id, CheckStatus::Passing);
            let id = world.instances[i].id.clone();
            world.events.push(None, "restart", id);
        }
        Err(e) => world.events.push(None, "restart failed", e),
    }
}

/// Makes the standby version active on both zerodowns' sources, and records the order.
async fn switch(world: &mut World) {
    world.active = if world.active == 1 { 2 } else { 1 };
    let new = world.active;
    let now = crate::now_us();
    for t in &mut world.targets {
        t.orders.push((now, new));
    }
    // The file first (one atomic rename), then Consul's tags one by one as Nomad would.
    let _ = world.write_upstreams();
    let changes: Vec<(String, Vec<String>)> = (0..world.instances.len())
        .map(|i| (world.instances[i].id.clone(), world.tags(i)))
        .collect();
    let seed = now;
    world.events.push(None, "switch", format!("v{new} active"));
    world
        .consul
        .flip_tags(random_order(changes, seed), Duration::from_millis(20))
        .await;
}
