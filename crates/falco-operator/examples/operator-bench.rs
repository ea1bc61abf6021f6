//! Load generator and probe of `bench/operator.sh` (not part of the operator). Works against any
//! instance operator that turns Falco CRs into DaemonSets named after them (ours, upstream's).
//!
//! ```text
//! operator-bench create   --namespace NS --count N       # N Falco CRs falco-0..N-1, in batches
//! operator-bench settle   --namespace NS --count N       # waits until N DaemonSets exist
//! operator-bench latency  --namespace NS --count N --rate R --version V
//!                                                         # R spec.version changes/s, one per CR;
//!                                                         # prints p50/p99 change → DaemonSet image
//! operator-bench touch    --namespace NS                  # a no-op change: annotates every CR
//! ```
//! KUBECONFIG selects the cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use falco_api::Falco;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn image_of(ds: &DaemonSet) -> Option<String> {
    ds.spec
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "falco")?
        .image
        .clone()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).cloned().unwrap_or_default();
    let ns = arg(&args, "--namespace").unwrap_or_else(|| "bench".to_owned());
    let count: usize = arg(&args, "--count").map_or(Ok(1000), |c| c.parse())?;
    let client = Client::try_default().await?;
    let falcos: Api<Falco> = Api::namespaced(client.clone(), &ns);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    match command.as_str() {
        "create" => {
            let names: Vec<String> = (0..count).map(|i| format!("falco-{i}")).collect();
            futures::stream::iter(names)
                .map(|name| {
                    let falcos = falcos.clone();
                    async move {
                        let cr = Falco::new(&name, serde_json::from_value(json!({}))?);
                        falcos.create(&PostParams::default(), &cr).await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<_>>()
                .await?;
            println!("created {count}");
        }
        "settle" => {
            let started = Instant::now();
            loop {
                let n = daemonsets
                    .list_metadata(&ListParams::default())
                    .await?
                    .items
                    .len();
                if n >= count {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            println!("settled {:.2}", started.elapsed().as_secs_f64());
        }
        "touch" => {
            let list = falcos.list_metadata(&ListParams::default()).await?;
            let stamp = format!(
                "{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_nanos()
            );
            futures::stream::iter(list.items)
                .map(|f| {
                    let falcos = falcos.clone();
                    let stamp = stamp.clone();
                    async move {
                        let patch = json!({"metadata": {"annotations": {"bench.falcosecurity.dev/touch": stamp}}});
                        falcos.patch(&f.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<_>>()
                .await?;
            println!("touched");
        }
        "latency" => {
            let rate: u64 = arg(&args, "--rate").map_or(Ok(100), |r| r.parse())?;
            let version = arg(&args, "--version").unwrap_or_else(|| "0.43.0".to_owned());
            let want = format!(":{version}");
            let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
            let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
            let watch = {
                let (sent, seen, want) = (sent.clone(), seen.clone(), want.clone());
                let stream =
                    watcher(daemonsets.clone(), watcher::Config::default()).applied_objects();
                tokio::spawn(async move {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(Ok(ds)) = stream.next().await {
                        if image_of(&ds).is_some_and(|i| i.ends_with(&want)) {
                            let name = ds.name_any();
                            if sent.lock().unwrap().contains_key(&name) {
                                seen.lock()
                                    .unwrap()
                                    .entry(name)
                                    .or_insert_with(Instant::now);
                            }
                        }
                    }
                })
            };
            tokio::time::sleep(Duration::from_secs(2)).await; // let the watch list first
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let mut tasks = Vec::new();
            for i in 0..count {
                tick.tick().await;
                let name = format!("falco-{i}");
                let falcos = falcos.clone();
                let sent = sent.clone();
                let version = version.clone();
                sent.lock().unwrap().insert(name.clone(), Instant::now());
                tasks.push(tokio::spawn(async move {
                    let patch = json!({"spec": {"version": version}});
                    falcos
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                }));
            }
            for t in tasks {
                t.await??;
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen.lock().unwrap().len() < count && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            watch.abort();
            let sent = sent.lock().unwrap();
            let seen = seen.lock().unwrap();
            let mut latencies: Vec<f64> = seen
                .iter()
                .filter_map(|(n, t)| Some(t.duration_since(*sent.get(n)?).as_secs_f64() * 1000.0))
                .collect();
            latencies.sort_by(f64::total_cmp);
            println!(
                "latency_ms p50={:.1} p99={:.1} max={:.1} applied={}/{}",
                percentile(&latencies, 50.0),
                percentile(&latencies, 99.0),
                latencies.last().copied().unwrap_or(f64::NAN),
                latencies.len(),
                count
            );
        }
        other => anyhow::bail!("unknown command {other:?}: create, settle, touch or latency"),
    }
    Ok(())
}
