use super::*;

fn chat(json: &str) -> Result<InferRequest, RayError> {
    serde_json::from_str::<ChatCompletionRequest>(json)
        .map_err(|e| RayError::invalid_request(e.to_string()))?
        .to_infer()
}

#[test]
fn a_plain_chat_request_becomes_system_input_and_limits() {
    let request = chat(
        r#"{"model":"m","messages":[{"role":"developer","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo"}]}],
            "max_completion_tokens":12,"temperature":0,"top_p":0.5,"seed":3,"stop":"END",
            "response_format":{"type":"json_object"},"n":1,"presence_penalty":0,"user":"u1",
            "stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .unwrap();
    assert_eq!(request.system.as_deref(), Some("Be brief."));
    assert_eq!(request.input.as_deref(), Some("Hello"));
    assert_eq!(request.max_tokens, Some(12));
    assert_eq!(request.stop, Some(vec!["END".to_string()]));
    assert_eq!(
        request.response_format.map(|f| f.kind),
        Some(ResponseFormatKind::JsonObject)
    );
    assert_eq!(request.stream, Some(true));
    assert!(request.history.is_none());
}

#[test]
fn unsupported_parameters_are_named() {
    for (json, param) in [
        (
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{}]}"#,
            "tools[0].type",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"functions":[{}]}"#,
            "functions",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"frobnicate":1}"#,
            "frobnicate",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}"#,
            "response_format.type",
        ),
        (
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#,
            "messages[0].content[0].type",
        ),
        (
            r#"{"messages":[{"role":"function","content":"x"}]}"#,
            "messages[0].role",
        ),
    ] {
        let error = chat(json).unwrap_err();
        assert_eq!(error.code(), ErrorCode::UnsupportedParameter, "{json}");
        assert_eq!(error.details().unwrap()["param"], param, "{json}");
    }
    let legacy = serde_json::from_str::<CompletionRequest>(r#"{"prompt":"x","logprobs":2}"#)
        .unwrap()
        .to_infer()
        .unwrap_err();
    assert_eq!(legacy.details().unwrap()["param"], "logprobs");
}

#[test]
fn passed_on_parameters_reach_rays_request() {
    let request = chat(
        r#"{"messages":[{"role":"user","content":"x"}],"n":2,"presence_penalty":0.5,
            "frequency_penalty":-1,"logit_bias":{"15":-100},"logprobs":true,"top_logprobs":3,
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "tool_choice":"required","parallel_tool_calls":false,
            "response_format":{"type":"json_schema","json_schema":{"name":"s","strict":true,
              "schema":{"type":"object"}}}}"#,
    )
    .unwrap();
    let extensions = request.extensions();
    assert_eq!(extensions.presence_penalty, Some(0.5));
    assert_eq!(extensions.frequency_penalty, Some(-1.0));
    assert_eq!(extensions.logit_bias.unwrap()["15"], -100.0);
    assert_eq!(
        (extensions.logprobs, extensions.top_logprobs),
        (Some(true), Some(3))
    );
    assert_eq!(extensions.tools.unwrap().len(), 1);
    assert_eq!(extensions.tool_choice.unwrap(), "required");
    assert_eq!(extensions.parallel_tool_calls, Some(false));
    assert_eq!(extensions.json_schema.unwrap().strict, Some(true));
}

#[test]
fn tool_results_go_back_as_history_and_end_the_conversation() {
    let request = chat(
        r#"{"messages":[{"role":"user","content":"Weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",
              "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"21 C"}],
            "tools":[{"type":"function","function":{"name":"get_weather"}}]}"#,
    )
    .unwrap();
    assert_eq!(request.input, None);
    assert!(request.answers_tool_calls());
    assert!(request.validate().is_ok());
    let history = request.history.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(
        history[1].tool_calls.as_ref().unwrap()[0].function.name,
        "get_weather"
    );
    assert_eq!(history[2].role, TurnRole::Tool);
    assert_eq!(history[2].tool_call_id.as_deref(), Some("c1"));
    let error = chat(r#"{"messages":[{"role":"tool","content":"x"}]}"#).unwrap_err();
    assert_eq!(
        error.details().unwrap()["param"],
        "messages[0].tool_call_id"
    );
}

#[test]
fn values_out_of_range_name_the_parameter_and_the_limit() {
    let limits = DoorLimits {
        max_output_tokens: 128,
        max_n: 4,
    };
    let check = |json: &str| {
        let request: ChatCompletionRequest = serde_json::from_str(json).unwrap();
        request
            .check_limits(limits)
            .and_then(|()| request.to_infer().map(|_| ()))
    };
    for (extra, param, limit) in [
        (r#""max_tokens":100000"#, "max_tokens", "between 1 and 128"),
        (r#""max_tokens":0"#, "max_tokens", "between 1 and 128"),
        (
            r#""max_completion_tokens":129"#,
            "max_completion_tokens",
            "between 1 and 128",
        ),
        (r#""temperature":5"#, "temperature", "between 0 and 2"),
        (r#""top_p":1.5"#, "top_p", "between 0.1 and 1"),
        (r#""n":5"#, "n", "between 1 and 4"),
        (r#""n":0"#, "n", "at least 1"),
        (
            r#""presence_penalty":3"#,
            "presence_penalty",
            "between -2 and 2",
        ),
        (
            r#""logit_bias":{"1":200}"#,
            "logit_bias.1",
            "between -100 and 100",
        ),
        (
            r#""logprobs":true,"top_logprobs":25"#,
            "top_logprobs",
            "between 0 and 20",
        ),
    ] {
        let json = format!(r#"{{"messages":[{{"role":"user","content":"x"}}],{extra}}}"#);
        let error = check(&json).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest, "{json}");
        let details = error.details().unwrap();
        assert_eq!(details["param"], param, "{json}");
        assert!(
            details["limit"].as_str().unwrap().contains(limit),
            "{json}: {details}"
        );
        assert!(
            error.message().contains(limit),
            "{json}: {}",
            error.message()
        );
    }
    let error =
        check(r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"auto"}"#).unwrap_err();
    assert_eq!(error.details().unwrap()["param"], "tool_choice");
}

#[test]
fn conversations_must_end_with_the_user() {
    assert!(chat(r#"{"messages":[]}"#).is_err());
    assert!(chat(r#"{"messages":[{"role":"system","content":"s"}]}"#).is_err());
    let error =
        chat(r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#)
            .unwrap_err();
    assert_eq!(error.code(), ErrorCode::UnsupportedParameter);
    let error = chat(
        r#"{"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
    )
    .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidRequest);
}

#[test]
fn legacy_completions_take_one_prompt() {
    let parse = |json: &str| {
        serde_json::from_str::<CompletionRequest>(json)
            .unwrap()
            .to_infer()
    };
    assert_eq!(
        parse(r#"{"prompt":["once"],"max_tokens":5}"#)
            .unwrap()
            .input
            .as_deref(),
        Some("once")
    );
    assert!(parse(r#"{"prompt":["a","b"]}"#).is_err());
    assert!(parse(r#"{"prompt":[1,2,3]}"#).is_err());
    assert!(parse(r#"{"prompt":"x","echo":true}"#).is_err());
}

#[test]
fn errors_keep_ray_codes_in_openai_shape() {
    let error = RayError::new(ErrorCode::QueueFull, "full");
    let body = OpenAiErrorBody::from_error(&error);
    assert_eq!(body.error.kind, "service_unavailable_error");
    assert_eq!(body.error.code.as_deref(), Some("queue_full"));
    let body = OpenAiErrorBody::from_error(&RayError::new(ErrorCode::RateLimited, "slow"));
    assert_eq!(body.error.kind, "rate_limit_error");
}
