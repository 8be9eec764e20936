use super::*;

fn team_a() -> Scope {
    Scope::new([("namespace", &["team-a"][..])]).unwrap()
}

/// Two allowed values and a second label.
fn two_labels() -> Scope {
    Scope::new([
        ("namespace", &["team-a", "team-a-batch"][..]),
        ("cluster", &["prod"][..]),
    ])
    .unwrap()
}

const ID: &str = "0f6c3d8e-2b1a-4c5d-9e8f-7a6b5c4d3e2f";

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn alert_names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn classification_table() {
    use Route::*;
    let (get, post, del, head, put) = (
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::HEAD,
        Method::PUT,
    );
    let id = || SilenceId::parse(ID).unwrap();
    let cases: Vec<(&Method, String, Route)> = vec![
        (&get, "/api/v2/alerts".into(), Alerts),
        (&get, "/api/v2/alerts/groups".into(), AlertGroups),
        (&get, "/api/v2/silences".into(), Silences),
        (&post, "/api/v2/silences".into(), NewSilence),
        (&get, format!("/api/v2/silence/{ID}"), Silence(id())),
        (&del, format!("/api/v2/silence/{ID}"), ExpireSilence(id())),
        (&get, "/api/v2/receivers".into(), Receivers),
        (&get, "/".into(), Open),
        (&head, "/".into(), Open),
        (&get, "/script.js".into(), Open),
        (&get, "/favicon.ico".into(), Open),
        (
            &get,
            "/lib/bootstrap-4.0.0/css/bootstrap.min.css".into(),
            Open,
        ),
        (&get, "/-/healthy".into(), Open),
        (&get, "/-/ready".into(), Open),
    ];
    for (method, path, want) in cases {
        assert_eq!(
            scoped_alertmanager_request(method, &path),
            want,
            "{method} {path}"
        );
    }
    // Refused, with the status the peer gets.
    let refused: Vec<(&Method, String, StatusCode)> = vec![
        (&get, "/api/v2/status".into(), StatusCode::FORBIDDEN),
        (&post, "/api/v2/alerts".into(), StatusCode::FORBIDDEN),
        (
            &head,
            "/api/v2/alerts".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &put,
            "/api/v2/silences".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &del,
            "/api/v2/silences".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &post,
            "/api/v2/alerts/groups".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            &post,
            format!("/api/v2/silence/{ID}"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (&post, "/".into(), StatusCode::METHOD_NOT_ALLOWED),
        (&get, "/api/v2/silence/".into(), StatusCode::BAD_REQUEST),
        (
            &del,
            "/api/v2/silence/status".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            &del,
            format!("/api/v2/silence/{ID}/x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            &del,
            format!("/api/v2/silence/{ID}0"),
            StatusCode::BAD_REQUEST,
        ),
        (&get, "/api/v1/alerts".into(), StatusCode::FORBIDDEN),
        (&get, "/api/v1/silences".into(), StatusCode::FORBIDDEN),
        (&get, "/api/v1".into(), StatusCode::FORBIDDEN),
        (&get, "/api/v2".into(), StatusCode::FORBIDDEN),
        (&get, "/api/v2/alertsx".into(), StatusCode::FORBIDDEN),
        (
            &get,
            "/api/v2/alerts/groups/x".into(),
            StatusCode::FORBIDDEN,
        ),
        (&get, "/metrics".into(), StatusCode::FORBIDDEN),
        (&get, "/debug/pprof/heap".into(), StatusCode::FORBIDDEN),
        (&post, "/-/reload".into(), StatusCode::FORBIDDEN),
        (&get, "/lib".into(), StatusCode::FORBIDDEN),
        (&get, "/script.jsx".into(), StatusCode::FORBIDDEN),
        (&get, "/something-new".into(), StatusCode::FORBIDDEN),
    ];
    for (method, path, status) in refused {
        match scoped_alertmanager_request(method, &path) {
            Route::Refuse(r) => assert_eq!(r.status(), status, "{method} {path}: {r}"),
            other => panic!("{method} {path}: {other:?}"),
        }
    }
    // The status refusal says why.
    let Route::Refuse(r) = scoped_alertmanager_request(&get, "/api/v2/status") else {
        unreachable!()
    };
    assert!(r.to_string().contains("whole configuration"), "{r}");
}

#[test]
fn silence_ids_are_lower_case_uuids_only() {
    assert_eq!(
        SilenceId::parse(ID).unwrap().path(),
        format!("/api/v2/silence/{ID}")
    );
    for bad in [
        "",
        "0F6C3D8E-2B1A-4C5D-9E8F-7A6B5C4D3E2F",
        "0f6c3d8e2b1a4c5d9e8f7a6b5c4d3e2f",
        "0f6c3d8e-2b1a-4c5d-9e8f-7a6b5c4d3e2",
        "0f6c3d8e-2b1a-4c5d-9e8f-7a6b5c4d3e2f ",
        "0f6c3d8e-2b1a-4c5d-9e8f/7a6b5c4d3e2f",
        "../../../../../api/v2/status/xxxxxx",
        "0f6c3d8e-2b1a-4c5d-9e8f-7a6b5c4d3e2g",
        "0f6c3d8e-2b1a-4c5d-9e8f-7a6b5c4d3e2é",
    ] {
        assert_eq!(SilenceId::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn alerts_are_filtered_by_labels() {
    let body = br#"[
        {"labels":{"alertname":"A","namespace":"team-a"},"annotations":{},"status":{"state":"active"}},
        {"labels":{"alertname":"B","namespace":"team-b"}},
        {"labels":{"alertname":"C"}},
        {"labels":{"alertname":"D","namespace":"team-a","x":"y"},"receivers":[{"name":"r"}]}
    ]"#;
    let out = json(&filter_alerts(&team_a(), body).unwrap());
    assert_eq!(alert_names(&out), ["A", "D"]);
    // Everything else in a kept alert is kept.
    assert_eq!(out[0]["status"]["state"], "active");
    assert_eq!(out[1]["receivers"][0]["name"], "r");
    // Several values, two labels: every label, any allowed value.
    let body = br#"[
        {"labels":{"alertname":"A","namespace":"team-a","cluster":"prod"}},
        {"labels":{"alertname":"B","namespace":"team-a-batch","cluster":"prod"}},
        {"labels":{"alertname":"C","namespace":"team-a","cluster":"dev"}},
        {"labels":{"alertname":"D","namespace":"team-a"}},
        {"labels":{"alertname":"E","cluster":"prod"}}
    ]"#;
    let out = json(&filter_alerts(&two_labels(), body).unwrap());
    assert_eq!(alert_names(&out), ["A", "B"]);
}

/// Alerts that look inside the scope to a careless reader, and are not.
#[test]
fn hostile_alerts_are_dropped() {
    let s = team_a();
    let cases: &[(&str, bool)] = &[
        (r#"{"labels":{"namespace":"team-a"}}"#, true),
        // JSON escapes decode to the same value: in.
        (r#"{"labels":{"namespace":"team\u002da"}}"#, true),
        // Last duplicate key wins, for serde as for the browser; one key out.
        (
            r#"{"labels":{"namespace":"team-b","namespace":"team-a"}}"#,
            true,
        ),
        (
            r#"{"labels":{"namespace":"team-a","namespace":"team-b"}}"#,
            false,
        ),
        (r#"{"labels":{"namespace":"Team-A"}}"#, false),
        (r#"{"labels":{"namespace":"team-a "}}"#, false),
        (r#"{"labels":{"namespace":"team-a\u0000"}}"#, false),
        (r#"{"labels":{"Namespace":"team-a"}}"#, false),
        (r#"{"labels":{"namespace":["team-a"]}}"#, false),
        (r#"{"labels":{"namespace":null}}"#, false),
        (r#"{"labels":{"namespace":1}}"#, false),
        (r#"{"labels":[["namespace","team-a"]]}"#, false),
        (r#"{"labels":"namespace=team-a"}"#, false),
        (r#"{"labels":null}"#, false),
        (r#"{"Labels":{"namespace":"team-a"}}"#, false),
        (r#"{"namespace":"team-a"}"#, false),
        (r#"{}"#, false),
        (r#"[]"#, false),
        (r#""team-a""#, false),
        (r#"null"#, false),
        (r#"{"labels":{"namespace":".*"}}"#, false),
        (r#"{"labels":{"namespace":"team-a|team-b"}}"#, false),
    ];
    for (alert, kept) in cases {
        let body = format!("[{alert}]");
        let out = json(&filter_alerts(&s, body.as_bytes()).unwrap());
        assert_eq!(out.as_array().unwrap().len(), usize::from(*kept), "{alert}");
    }
    // Unicode values compare as written: no normalization, so the
    // decomposed form of an allowed value is another value.
    let s = Scope::new([("team", &["équipe-α"][..])]).unwrap();
    let body = "[{\"labels\":{\"team\":\"équipe-α\"}},{\"labels\":{\"team\":\"e\u{301}quipe-α\"}}]";
    let out = json(&filter_alerts(&s, body.as_bytes()).unwrap());
    assert_eq!(out.as_array().unwrap().len(), 1);
    assert_eq!(out[0]["labels"]["team"], "équipe-α");
}

/// One of the answer filters, as the tests call them.
type AnswerFilter = fn(&Scope, &[u8]) -> Result<Vec<u8>, Refusal>;

#[test]
fn unreadable_answers_fail_closed() {
    let s = team_a();
    let filters: [(&str, AnswerFilter); 4] = [
        ("alerts", filter_alerts),
        ("groups", filter_alert_groups),
        ("silences", filter_silences),
        ("receivers", |_, b| receiver_names(b)),
    ];
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<&[u8]> = vec![
        b"",
        b"not json",
        b"{}",
        br#"{"alerts":[]}"#,
        b"null",
        b"\"[]\"",
        b"[",
        b"[] []",
        b"[\xff]",
        br#"[{"labels":{"namespace":"team-a"}}"#,
        deep.as_bytes(),
    ];
    for (name, f) in filters {
        for body in &bodies {
            let got = f(&s, body);
            assert!(
                matches!(got, Err(Refusal::Unreadable { .. })),
                "{name} {:?}: {got:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            assert_eq!(got.unwrap_err().status(), StatusCode::BAD_GATEWAY);
        }
        // An empty list is a list.
        assert_eq!(f(&s, b" [ ] ").unwrap(), b"[]");
    }
}

/// Found by the alertmanager_scope fuzz target: without serde_json's
/// `float_roundtrip`, a number read back from the filter's own output could
/// drift by one ulp at each pass. Numbers now keep the value a browser's
/// `JSON.parse` reads (digits beyond an f64's are lost, as they are there),
/// and a second pass changes nothing.
#[test]
fn numbers_keep_their_value_through_the_filter() {
    let body = br#"[{"labels":{"namespace":"team-a"},"n":[22222222222222222222222222222222222222222222222222222,0.1,1e-300,12345678901234567890]}]"#;
    let once = filter_alerts(&team_a(), body).unwrap();
    assert_eq!(filter_alerts(&team_a(), &once).unwrap(), once);
    let v = json(&once);
    assert_eq!(v[0]["n"][0].as_f64(), Some(2.2222222222222222e52));
    assert_eq!(v[0]["n"][1].as_f64(), Some(0.1));
    assert_eq!(v[0]["n"][3].as_u64(), Some(12345678901234567890));
}

#[test]
fn a_large_answer_is_filtered_in_one_pass() {
    let mut body = String::from("[");
    for i in 0..50_000 {
        if i > 0 {
            body.push(',');
        }
        let ns = if i % 2 == 0 { "team-a" } else { "team-b" };
        body.push_str(&format!(
            r#"{{"labels":{{"alertname":"a{i}","namespace":"{ns}"}},"annotations":{{"summary":"{}"}}}}"#,
            "x".repeat(100)
        ));
    }
    body.push(']');
    let out = json(&filter_alerts(&team_a(), body.as_bytes()).unwrap());
    assert_eq!(out.as_array().unwrap().len(), 25_000);
}

#[test]
fn alert_groups_are_filtered_and_empty_groups_dropped() {
    let body = br#"[
        {"labels":{"alertname":"Backlog"},"receiver":{"name":"pager"},"alerts":[
            {"labels":{"alertname":"Backlog","namespace":"team-a"}},
            {"labels":{"alertname":"Backlog","namespace":"team-b"}}]},
        {"labels":{"namespace":"team-b"},"receiver":{"name":"b"},"alerts":[
            {"labels":{"alertname":"B","namespace":"team-b"}}]},
        {"labels":{},"receiver":{"name":"none"},"alerts":[]}
    ]"#;
    let out = json(&filter_alert_groups(&team_a(), body).unwrap());
    let groups = out.as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["receiver"]["name"], "pager");
    assert_eq!(groups[0]["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["alerts"][0]["labels"]["namespace"], "team-a");
    // A group whose alerts cannot be read: the whole answer is unreadable.
    for bad in [
        r#"[{"labels":{},"receiver":{"name":"x"}}]"#,
        r#"[{"alerts":{"labels":{"namespace":"team-a"}}}]"#,
        r#"[{"alerts":null}]"#,
        r#"[[]]"#,
    ] {
        assert!(
            matches!(
                filter_alert_groups(&team_a(), bad.as_bytes()),
                Err(Refusal::Unreadable { .. })
            ),
            "{bad}"
        );
    }
}

/// The hostile table of silence matchers: each list of matchers, under
/// a scope, either pins it or not. The same answer must come from the
/// list filter, the one-silence check and the check of a new silence.
#[test]
fn hostile_silence_matchers() {
    let a = team_a();
    let two = two_labels();
    let m = |name: &str, value: &str, regex: bool, equal: Option<bool>| {
        let mut o = serde_json::json!({"name": name, "value": value, "isRegex": regex});
        if let Some(e) = equal {
            o["isEqual"] = Value::Bool(e);
        }
        o
    };
    let cases: Vec<(&str, &Scope, Vec<Value>, bool)> = vec![
        (
            "the scope's equality",
            &a,
            vec![m("namespace", "team-a", false, Some(true))],
            true,
        ),
        (
            "isEqual absent means true",
            &a,
            vec![m("namespace", "team-a", false, None)],
            true,
        ),
        (
            "and another matcher",
            &a,
            vec![
                m("alertname", "X", false, None),
                m("namespace", "team-a", false, None),
            ],
            true,
        ),
        (
            "a regex that matches only team-a",
            &a,
            vec![m("namespace", "team-a", true, None)],
            false,
        ),
        (
            "a regex alternation",
            &a,
            vec![m("namespace", "team-a|team-b", true, None)],
            false,
        ),
        (
            "a match-all regex",
            &a,
            vec![m("namespace", ".*", true, None)],
            false,
        ),
        (
            "isEqual false: everything but team-a",
            &a,
            vec![m("namespace", "team-a", false, Some(false))],
            false,
        ),
        (
            "a negative regex",
            &a,
            vec![m("namespace", "team-b", true, Some(false))],
            false,
        ),
        (
            "the right label, a wrong value",
            &a,
            vec![m("namespace", "team-b", false, None)],
            false,
        ),
        (
            "a value that differs in case",
            &a,
            vec![m("namespace", "Team-a", false, None)],
            false,
        ),
        (
            "a value with a trailing space",
            &a,
            vec![m("namespace", "team-a ", false, None)],
            false,
        ),
        (
            "an empty value (matches a missing label)",
            &a,
            vec![m("namespace", "", false, None)],
            false,
        ),
        (
            "another label with the scope's value",
            &a,
            vec![m("team", "team-a", false, None)],
            false,
        ),
        (
            "the label name in another case",
            &a,
            vec![m("Namespace", "team-a", false, None)],
            false,
        ),
        ("no matchers at all", &a, vec![], false),
        (
            "only other labels",
            &a,
            vec![m("alertname", "X", false, None)],
            false,
        ),
        // Matchers are ANDed: one pinning matcher is enough, a broader
        // one beside it only narrows.
        (
            "duplicate: pinned and a match-all regex",
            &a,
            vec![
                m("namespace", ".*", true, None),
                m("namespace", "team-a", false, None),
            ],
            true,
        ),
        (
            "duplicate: pinned and isEqual false on another value",
            &a,
            vec![
                m("namespace", "team-a", false, None),
                m("namespace", "team-b", false, Some(false)),
            ],
            true,
        ),
        (
            "duplicate: two unpinned",
            &a,
            vec![
                m("namespace", "team-a", true, None),
                m("namespace", "team-a", false, Some(false)),
            ],
            false,
        ),
        (
            "one of several allowed values",
            &two,
            vec![
                m("namespace", "team-a-batch", false, None),
                m("cluster", "prod", false, None),
            ],
            true,
        ),
        (
            "the other allowed value",
            &two,
            vec![
                m("namespace", "team-a", false, None),
                m("cluster", "prod", false, None),
            ],
            true,
        ),
        (
            "several values as a regex of exactly them",
            &two,
            vec![
                m("namespace", "team-a|team-a-batch", true, None),
                m("cluster", "prod", false, None),
            ],
            false,
        ),
        (
            "one label of two pinned",
            &two,
            vec![m("namespace", "team-a", false, None)],
            false,
        ),
        (
            "the second label on a wrong value",
            &two,
            vec![
                m("namespace", "team-a", false, None),
                m("cluster", "dev", false, None),
            ],
            false,
        ),
        (
            "the second label as a regex",
            &two,
            vec![
                m("namespace", "team-a", false, None),
                m("cluster", "prod", true, None),
            ],
            false,
        ),
    ];
    for (what, scope, matchers, pins) in cases {
        let silence = serde_json::json!({
            "id": ID, "matchers": matchers, "startsAt": "2026-12-07T19:00:00Z",
            "endsAt": "2026-12-07T20:00:00Z", "createdBy": "t", "comment": "c",
            "status": {"state": "active"}, "updatedAt": "2026-12-07T19:00:00Z"
        });
        let one = serde_json::to_vec(&silence).unwrap();
        assert_eq!(silence_visible(scope, &silence), pins, "{what}");
        let listed =
            json(&filter_silences(scope, &serde_json::to_vec(&[&silence]).unwrap()).unwrap());
        assert_eq!(
            listed.as_array().unwrap().len(),
            usize::from(pins),
            "{what}"
        );
        let existing = check_existing_silence(scope, &SilenceId::parse(ID).unwrap(), &one);
        assert_eq!(existing.is_ok(), pins, "{what}: {existing:?}");
        if !pins {
            assert_eq!(
                existing.unwrap_err().status(),
                StatusCode::FORBIDDEN,
                "{what}"
            );
        }
        // As a new silence (the answer's fields dropped).
        let mut posted = silence.clone();
        let o = posted.as_object_mut().unwrap();
        o.remove("id");
        o.remove("status");
        o.remove("updatedAt");
        let got = check_new_silence(scope, &serde_json::to_vec(&posted).unwrap());
        match (pins, got) {
            (true, Ok(NewSilence::Create(body))) => {
                assert_eq!(json(&body)["matchers"], posted["matchers"], "{what}");
            }
            (false, Err(Refusal::NotPinned(msg))) => {
                let label = scope
                    .labels()
                    .iter()
                    .find(|l| msg.contains(&format!("label `{}`", l.name)));
                assert!(label.is_some(), "{what}: the message names no label: {msg}");
            }
            (false, Err(Refusal::Shape(msg))) if matchers_empty(&posted) => {
                assert!(msg.contains("empty"), "{what}: {msg}");
            }
            (_, got) => panic!("{what}: pins {pins}, got {got:?}"),
        }
    }
}

fn matchers_empty(v: &Value) -> bool {
    v["matchers"].as_array().is_some_and(Vec::is_empty)
}

#[test]
fn a_refused_silence_names_the_label_and_what_it_has() {
    let body = br#"{"matchers":[{"name":"namespace","value":"team-.*","isRegex":true},
        {"name":"alertname","value":"X","isRegex":false}],
        "startsAt":"s","endsAt":"e","createdBy":"c","comment":"c"}"#;
    let err = check_new_silence(&team_a(), body).unwrap_err();
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        err.to_string(),
        "the silence does not pin the peer's scope: label `namespace` needs the equality \
         matcher namespace=\"team-a\" (isRegex false, isEqual true); it has namespace=~\"team-.*\""
    );
    let body = br#"{"matchers":[{"name":"namespace","value":"team-a","isRegex":false}],
        "startsAt":"s","endsAt":"e","createdBy":"c","comment":"c"}"#;
    let err = check_new_silence(&two_labels(), body).unwrap_err();
    assert!(
        err.to_string()
            .contains("label `cluster` needs the equality matcher cluster=\"prod\""),
        "{err}"
    );
    assert!(
        err.to_string().contains("it has no matcher on `cluster`"),
        "{err}"
    );
    let body = br#"{"matchers":[{"name":"namespace","value":"team-b","isRegex":false},
        {"name":"cluster","value":"prod","isRegex":false}],
        "startsAt":"s","endsAt":"e","createdBy":"c","comment":"c"}"#;
    let err = check_new_silence(&two_labels(), body).unwrap_err();
    assert!(
        err.to_string()
            .contains("matcher namespace=\"team-a\" or namespace=\"team-a-batch\" (isRegex false, isEqual true); it has namespace=\"team-b\""),
        "{err}"
    );
}

#[test]
fn a_new_silence_is_rebuilt_from_what_was_read() {
    let body =
        br#"{"matchers":[{"name":"namespace","value":"team-a","isRegex":false,"isEqual":true},
        {"name":"alertname","value":"Disk.*","isRegex":true}],
        "startsAt":"2026-12-07T19:00:00.000Z","endsAt":"2026-12-07T21:00:00.000Z",
        "createdBy":"alice","comment":"maintenance \u00e9 \"quoted\"","id":""}"#;
    let NewSilence::Create(out) = check_new_silence(&team_a(), body).unwrap() else {
        panic!("an empty id is a new silence")
    };
    let out = json(&out);
    assert_eq!(
        out,
        serde_json::json!({
            "matchers": [
                {"name": "namespace", "value": "team-a", "isRegex": false, "isEqual": true},
                {"name": "alertname", "value": "Disk.*", "isRegex": true}
            ],
            "startsAt": "2026-12-07T19:00:00.000Z", "endsAt": "2026-12-07T21:00:00.000Z",
            "createdBy": "alice", "comment": "maintenance é \"quoted\""
        })
    );
    // With an id it replaces that silence, which must be fetched first.
    let body = format!(
        r#"{{"id":"{ID}","matchers":[{{"name":"namespace","value":"team-a","isRegex":false}}],
        "startsAt":"s","endsAt":"e","createdBy":"c","comment":"c"}}"#
    );
    match check_new_silence(&team_a(), body.as_bytes()).unwrap() {
        NewSilence::Replace { id, body } => {
            assert_eq!(id.as_str(), ID);
            assert_eq!(json(&body)["id"], ID);
        }
        other => panic!("{other:?}"),
    }
}

/// Bodies a peer might send to get past the check, or to make the gateway
/// and Alertmanager read different silences.
#[test]
fn hostile_new_silences_are_refused() {
    let ok_m = r#"{"name":"namespace","value":"team-a","isRegex":false}"#;
    let rest = r#""startsAt":"s","endsAt":"e","createdBy":"c","comment":"c""#;
    let cases: Vec<(String, StatusCode)> = vec![
        // Go reads keys case-insensitively: "Matchers" would be its matchers.
        (
            format!(r#"{{"matchers":[{ok_m}],"Matchers":[],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":"team-a","isRegex":false,"NAME":"x"}}],{rest}}}"#
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":"team-a","isRegex":false,"Value":"team-b"}}],{rest}}}"#
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":[{ok_m}],"extra":1,{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":[{ok_m}],"ID":"{ID}",{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        // Missing fields and wrong types.
        (format!(r#"{{{rest}}}"#), StatusCode::BAD_REQUEST),
        (
            format!(r#"{{"matchers":[],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":{ok_m},{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":null,{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":[{ok_m},null],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":[{ok_m},"namespace=team-a"],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":[{{"name":"namespace","value":"team-a"}}],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":"team-a","isRegex":"false"}}],{rest}}}"#
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":"team-a","isRegex":0}}],{rest}}}"#
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":"team-a","isRegex":false,"isEqual":null}}],{rest}}}"#
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":["team-a"],"isRegex":false}}],{rest}}}"#
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":[{{"name":null,"value":"team-a","isRegex":false}}],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"matchers":[{ok_m}],"startsAt":"s","endsAt":"e","createdBy":"c"}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                r#"{{"matchers":[{ok_m}],"startsAt":1,"endsAt":"e","createdBy":"c","comment":"c"}}"#
            ),
            StatusCode::BAD_REQUEST,
        ),
        // IDs that are not Alertmanager's would go into an upstream path.
        (
            format!(r#"{{"id":"../status","matchers":[{ok_m}],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                r#"{{"id":"{}","matchers":[{ok_m}],{rest}}}"#,
                ID.to_uppercase()
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"id":1,"matchers":[{ok_m}],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(r#"{{"id":null,"matchers":[{ok_m}],{rest}}}"#),
            StatusCode::BAD_REQUEST,
        ),
        // Not a silence at all.
        ("".into(), StatusCode::BAD_REQUEST),
        ("matchers=namespace".into(), StatusCode::BAD_REQUEST),
        (
            format!("[{{\"matchers\":[{ok_m}],{rest}}}]"),
            StatusCode::BAD_REQUEST,
        ),
        ("null".into(), StatusCode::BAD_REQUEST),
        (
            format!(r#"{{"matchers":[{ok_m}],{rest}}} {{}}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            StatusCode::BAD_REQUEST,
        ),
        // Pinned wrongly: 403.
        (
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":"team-a","isRegex":false,"isEqual":false}}],{rest}}}"#
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            format!(
                r#"{{"matchers":[{{"name":"namespace","value":"team-a|team-b","isRegex":true}}],{rest}}}"#
            ),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (body, status) in cases {
        let got = check_new_silence(&team_a(), body.as_bytes());
        assert_eq!(
            got.as_ref().map_err(Refusal::status),
            Err(status),
            "{}: {got:?}",
            &body[..body.len().min(200)]
        );
    }
    // A repeated key: serde keeps the last, and so does the rebuilt body
    // (which carries it once), so Alertmanager reads what was checked.
    let body = format!(
        r#"{{"matchers":[{{"name":"namespace","value":"team-b","isRegex":false}}],"matchers":[{ok_m}],{rest}}}"#
    );
    let NewSilence::Create(out) = check_new_silence(&team_a(), body.as_bytes()).unwrap() else {
        unreachable!()
    };
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.matches("matchers").count(), 1, "{out}");
    assert!(!out.contains("team-b"), "{out}");
    // Not UTF-8.
    let got = check_new_silence(&team_a(), b"{\"matchers\":\xff}");
    assert_eq!(got.map_err(|e| e.status()), Err(StatusCode::BAD_REQUEST));
}

#[test]
fn an_existing_silence_must_be_the_one_asked_for_and_pinned() {
    let id = SilenceId::parse(ID).unwrap();
    let s = team_a();
    let ours = format!(
        r#"{{"id":"{ID}","matchers":[{{"name":"namespace","value":"team-a","isRegex":false,"isEqual":true}}],
        "status":{{"state":"active"}}}}"#
    );
    assert_eq!(check_existing_silence(&s, &id, ours.as_bytes()), Ok(()));
    let theirs = ours.replace("team-a", "team-b");
    let err = check_existing_silence(&s, &id, theirs.as_bytes()).unwrap_err();
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    assert!(err.to_string().contains(ID), "{err}");
    assert!(
        err.to_string().contains("it has namespace=\"team-b\""),
        "{err}"
    );
    // An answer about another silence, or none: 502, never a yes.
    let other = ours.replace(ID, "00000000-0000-0000-0000-000000000000");
    for bad in [other.as_str(), "", "[]", "null", r#"{"matchers":[]}"#] {
        let got = check_existing_silence(&s, &id, bad.as_bytes());
        assert!(
            matches!(got, Err(Refusal::Unreadable { .. })),
            "{bad}: {got:?}"
        );
    }
    // Matchers that cannot be read: not pinned.
    for matchers in [
        r#"null"#,
        r#"[{"name":"namespace","value":"team-a"}]"#,
        r#"[{"name":"namespace","value":"team-a","isRegex":false,"isEqual":"yes"}]"#,
        r#"[{"name":"namespace","value":"team-a","isRegex":false},7]"#,
    ] {
        let body = format!(r#"{{"id":"{ID}","matchers":{matchers}}}"#);
        let got = check_existing_silence(&s, &id, body.as_bytes());
        assert!(
            matches!(got, Err(Refusal::OtherSilence(..))),
            "{matchers}: {got:?}"
        );
    }
}

#[test]
fn silences_are_listed_only_where_they_pin_the_scope() {
    let body = br#"[
        {"id":"1","matchers":[{"name":"namespace","value":"team-a","isRegex":false,"isEqual":true}],"comment":"ours"},
        {"id":"2","matchers":[{"name":"namespace","value":"team-b","isRegex":false,"isEqual":true}]},
        {"id":"3","matchers":[{"name":"namespace","value":"team-a|team-b","isRegex":true,"isEqual":true}]},
        {"id":"4","matchers":[{"name":"alertname","value":"Watchdog","isRegex":false}]},
        {"id":"5"},
        "6"
    ]"#;
    let out = json(&filter_silences(&team_a(), body).unwrap());
    let arr = out.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert_eq!(arr[0]["comment"], "ours");
}

/// The peer's `filter` parameters go to Alertmanager unread (they only
/// narrow), and nothing relies on Alertmanager having applied them: an
/// answer to `?filter=namespace="team-a"` that still holds team B's
/// alerts is filtered all the same.
#[test]
fn the_filter_parameter_is_not_trusted() {
    assert_eq!(
        scoped_alertmanager_request(&Method::GET, "/api/v2/alerts"),
        Route::Alerts
    );
    let answer = br#"[{"labels":{"alertname":"B","namespace":"team-b"}}]"#;
    assert_eq!(filter_alerts(&team_a(), answer).unwrap(), b"[]");
}

#[test]
fn receivers_are_names_only() {
    let body = br#"[{"name":"team-a-pager"},{"name":"team-b","webhook_configs":[{"url":"http://secret"}]}]"#;
    let out = receiver_names(body).unwrap();
    assert_eq!(out, br#"[{"name":"team-a-pager"},{"name":"team-b"}]"#);
    for bad in [
        r#"[{"Name":"x"}]"#,
        r#"[{"name":1}]"#,
        r#"["x"]"#,
        r#"{"name":"x"}"#,
    ] {
        assert!(receiver_names(bad.as_bytes()).is_err(), "{bad}");
    }
}
