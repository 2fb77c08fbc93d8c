//! Starts a backend and an edge in front of it, then runs a short client
//! session that prints the gRPC status of each call.

use std::num::NonZeroU32;
use std::time::Duration;

use grpc_example::backend::{self, Backend};
use grpc_example::pb::inventory_client::InventoryClient;
use grpc_example::pb::{GetRequest, ReserveRequest};
use grpc_example::{DELAY_MS, edge};
use palisade::rate_limit::Quota;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const API_KEY: &str = "k-demo";

fn print<T: std::fmt::Debug>(step: &str, answer: &Result<tonic::Response<T>, Status>) {
    match answer {
        Ok(response) => println!("{step:<52} OK                  {:?}", response.get_ref()),
        Err(status) => {
            let pushback = status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .map(|v| format!(" (grpc-retry-pushback-ms: {})", v.to_str().unwrap_or("?")))
                .unwrap_or_default();
            println!(
                "{step:<52} {:<19} {}{pushback}",
                format!("{:?}", status.code()),
                status.message()
            );
        }
    }
}

fn request<T>(message: T, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", API_KEY.parse().unwrap());
    for (name, value) in metadata {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    request
}

fn reserve(quantity: u32, key: &str) -> Request<ReserveRequest> {
    let message = ReserveRequest {
        sku: "apple".into(),
        quantity,
    };
    request(message, &[("idempotency-key", key)])
}

fn get(metadata: &[(&'static str, &str)]) -> Request<GetRequest> {
    request(
        GetRequest {
            sku: "apple".into(),
        },
        metadata,
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend_listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend_listener.local_addr()?;
    let (stop_backend, stopped) = oneshot::channel::<()>();
    let inventory = Backend::new();
    let seen = inventory.seen();
    let backend = tokio::spawn(backend::serve(inventory, backend_listener, async {
        stopped.await.ok();
    }));

    let config = edge::Config {
        quota: Quota::per_minute(NonZeroU32::new(10).unwrap()),
        max_timeout: Duration::from_millis(500),
        ..edge::Config::default()
    };
    let edge_listener = TcpListener::bind("127.0.0.1:0").await?;
    let edge_addr = edge_listener.local_addr()?;
    let (_breaker, server) =
        edge::serve(edge_listener, backend_addr, &config, std::future::pending());
    tokio::spawn(server);
    println!("backend on {backend_addr}, edge on {edge_addr}\n");

    let channel = edge::channel(edge_addr);
    let mut client = InventoryClient::new(channel.clone());

    print("Get apple", &client.get(get(&[])).await);
    print(
        "Reserve 2 apples, key order-1",
        &client.reserve(reserve(2, "order-1")).await,
    );
    print(
        "Reserve 2 apples, key order-1 again (replay)",
        &client.reserve(reserve(2, "order-1")).await,
    );
    print(
        "Reserve 5 apples, key order-1 (another message)",
        &client.reserve(reserve(5, "order-1")).await,
    );
    // A call with key order-2 that takes 300 ms, and the same call again
    // while it runs.
    let arrived = seen.arrived.notified();
    let mut first_client = client.clone();
    let first = tokio::spawn(async move {
        let mut slow = reserve(1, "order-2");
        slow.metadata_mut().insert(DELAY_MS, "300".parse().unwrap());
        first_client.reserve(slow).await
    });
    arrived.await;
    print(
        "Reserve 1 apple, key order-2, while order-2 runs",
        &client.reserve(reserve(1, "order-2")).await,
    );
    print(
        "Reserve 1 apple, key order-2 (the first call)",
        &first.await?,
    );
    print(
        "Get apple, backend 5 s late (edge max 500 ms)",
        &client.get(get(&[(DELAY_MS, "5000")])).await,
    );

    // A malformed grpc-timeout: tonic never sends one, so it is set below
    // the client, on the HTTP request.
    let mut raw = InventoryClient::new(
        tower::ServiceBuilder::new()
            .map_request(|mut req: http::Request<tonic::body::Body>| {
                req.headers_mut()
                    .insert("grpc-timeout", http::HeaderValue::from_static("1.5S"));
                req
            })
            .service(channel.clone()),
    );
    print("Get apple, grpc-timeout: 1.5S", &raw.get(get(&[])).await);

    let mut limited = false;
    for _ in 0..30 {
        let answer = client.get(get(&[])).await;
        if answer
            .as_ref()
            .is_err_and(|s| s.code() == Code::ResourceExhausted)
        {
            print("Get apple, over the quota of 10 a minute", &answer);
            limited = true;
            break;
        }
    }
    assert!(limited, "the quota should run out");

    stop_backend.send(()).ok();
    backend.await??;
    let mut other = InventoryClient::<Channel>::new(channel);
    let mut down = request(
        GetRequest {
            sku: "apple".into(),
        },
        &[],
    );
    down.metadata_mut().insert("x-api-key", "k-other".parse()?);
    print("Get apple, backend stopped", &other.get(down).await);
    Ok(())
}
