//! CNI: the runtime keys of the attach API (`POST /v1/attach/check`,
//! `POST /v1/attach/collect`) and the `dnet-cni` plugin driven exactly as
//! libcni drives it.

use dnet_sandbox::{Sandbox, assert_consistent};
use serde_json::{Value, json};

fn attach_cni(sb: &mut Sandbox, id: &str, suffix: &str) -> Value {
    let ns = sb.add_netns(suffix);
    let (code, r) = sb.api_post(
        "/v1/attach",
        &json!({
            "network": "bridge",
            "target": {"kind": "netns", "path": ns},
            "ifname": "eth0",
            "name": id,
            "runtime": {"runtime": "cni", "id": id},
        }),
    );
    assert_eq!(code, 201, "{r}");
    r
}

fn runtime_ids(sb: &Sandbox) -> Vec<String> {
    let mut ids: Vec<String> = sb.state()["containers"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|c| c["runtime"]["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

#[test]
fn cni_api_check_returns_the_attachment_and_404_when_there_is_none() {
    let mut sb = Sandbox::new();
    let r = attach_cni(&mut sb, "c1", "a");
    let (code, c) = sb.api_post(
        "/v1/attach/check",
        &json!({"runtime": {"runtime": "cni", "id": "c1"}, "network": "bridge"}),
    );
    assert_eq!(code, 200, "{c}");
    for k in [
        "container_id",
        "ip",
        "mac",
        "host_ifname",
        "ifname",
        "gateway",
    ] {
        assert_eq!(c[k], r[k], "{k}: {c} vs {r}");
    }
    assert_eq!(c["container"], "c1");

    for (body, why) in [
        (
            json!({"runtime": {"runtime": "cni", "id": "nosuch"}, "network": "bridge"}),
            "no container attached by cni nosuch",
        ),
        (
            json!({"runtime": {"runtime": "docker", "id": "c1"}, "network": "bridge"}),
            "no container attached by docker c1",
        ),
        (
            json!({"runtime": {"runtime": "cni", "id": "c1"}, "network": "nosuchnet"}),
            "network \"nosuchnet\" not found",
        ),
    ] {
        let (code, e) = sb.api_post("/v1/attach/check", &body);
        assert_eq!(code, 404, "{body}: {e}");
        assert!(e["message"].as_str().unwrap().contains(why), "{body}: {e}");
    }
    let (code, e) = sb.api_post("/v1/attach/check", &json!({"network": "bridge"}));
    assert_eq!(code, 400, "{e}");
    assert_consistent(&sb);
}

#[test]
fn cni_api_collect_detaches_only_what_the_runtime_no_longer_knows() {
    let mut sb = Sandbox::new();
    attach_cni(&mut sb, "k1", "a");
    attach_cni(&mut sb, "k2", "b");
    attach_cni(&mut sb, "gone1", "c");
    sb.sleeper("own", &[]);
    // Another runtime's container is not the CNI's to collect.
    let ns = sb.add_netns("d");
    let (code, r) = sb.api_post(
        "/v1/attach",
        &json!({"network": "bridge", "target": {"kind": "netns", "path": ns},
                "runtime": {"runtime": "docker", "id": "gone2"}}),
    );
    assert_eq!(code, 201, "{r}");
    assert_eq!(runtime_ids(&sb), ["gone1", "gone2", "k1", "k2"]);

    // Bad input changes nothing.
    let before = sb.snapshot();
    let (code, e) = sb.api_post(
        "/v1/attach/collect",
        &json!({"runtime": "cni", "network": "nosuchnet", "keep": []}),
    );
    assert_eq!(code, 404, "{e}");
    let (code, e) = sb.api_post("/v1/attach/collect", &json!({"runtime": "", "keep": []}));
    assert_eq!(code, 400, "{e}");
    assert_eq!(sb.snapshot(), before);

    let (code, c) = sb.api_post(
        "/v1/attach/collect",
        &json!({"runtime": "cni", "network": "bridge", "keep": ["k1", "k2"]}),
    );
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["detached"], json!(["gone1"]));
    assert_eq!(runtime_ids(&sb), ["gone2", "k1", "k2"]);
    assert!(sb.dnet(&["ps"]).status.success());
    assert!(
        sb.container("own")["networks"].is_array(),
        "dnet's own container stays"
    );

    // Again: nothing left to collect.
    let (code, c) = sb.api_post(
        "/v1/attach/collect",
        &json!({"runtime": "cni", "keep": ["k1", "k2"]}),
    );
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["detached"], json!([]));
    let (code, c) = sb.api_post("/v1/attach/collect", &json!({"runtime": "cni", "keep": []}));
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["detached"].as_array().unwrap().len(), 2, "{c}");
    assert_eq!(runtime_ids(&sb), ["gone2"]);
    assert_consistent(&sb);
}
