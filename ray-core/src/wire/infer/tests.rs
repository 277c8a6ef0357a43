use super::*;

fn parse(json: &str) -> Result<InferRequest, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn max_tokens_is_floored_and_negative_becomes_zero() {
    assert_eq!(
        parse(r#"{"maxTokens":120.9}"#).unwrap().max_tokens,
        Some(120)
    );
    assert_eq!(parse(r#"{"maxTokens":-5}"#).unwrap().max_tokens, Some(0));
}

#[test]
fn unknown_fields_are_rejected() {
    let error = parse(r#"{"input":"x","maxTokenz":3}"#).unwrap_err();
    assert!(error.to_string().contains("maxTokenz"), "{error}");
}

#[test]
fn response_format_rejects_other_types() {
    assert!(parse(r#"{"responseFormat":{"type":"xml"}}"#).is_err());
    let no_schema = parse(r#"{"input":"x","responseFormat":{"type":"json_schema"}}"#).unwrap();
    assert!(
        no_schema
            .validate()
            .unwrap_err()
            .message()
            .contains("json_schema"),
        "json_schema needs its schema"
    );
    let with_schema = parse(
        r#"{"input":"x","responseFormat":{"type":"json_schema",
            "json_schema":{"name":"s","schema":{"type":"object"}}}}"#,
    )
    .unwrap();
    assert!(with_schema.validate().is_ok());
    assert!(with_schema.extensions().json_schema.is_some());
    let ok = parse(r#"{"responseFormat":{"type":"json_object"}}"#).unwrap();
    assert_eq!(
        ok.response_format.unwrap().kind,
        ResponseFormatKind::JsonObject
    );
}

#[test]
fn seed_must_be_an_integer() {
    assert!(parse(r#"{"seed":1.5}"#).is_err());
    let req = parse(r#"{"input":"x","seed":9007199254740992}"#).unwrap();
    assert!(req.validate().is_err());
}

#[test]
fn empty_input_is_invalid() {
    let error = parse(r#"{"input":"   "}"#).unwrap().validate().unwrap_err();
    assert_eq!(error.message(), "input: input must be a non-empty string");
    let error = InferRequest::default().validate().unwrap_err();
    assert!(error.message().starts_with("input:"));
}

#[test]
fn template_cannot_be_combined_with_input() {
    let req = parse(r#"{"templateId":"email.follow_up.v1","input":"x"}"#).unwrap();
    let problems = req.problems();
    assert!(problems[0].starts_with("templateId:"), "{problems:?}");
}

#[test]
fn every_problem_is_reported() {
    let req = InferRequest {
        input: Some("ok".into()),
        stop: Some(vec![String::new(); 17]),
        dedupe_key: Some("k".repeat(600)),
        metadata: Some([("__proto__".to_string(), "x".to_string())].into()),
        ..InferRequest::default()
    };
    let problems = req.problems();
    assert!(problems.iter().any(|p| p.starts_with("stop:")));
    assert!(problems.iter().any(|p| p.starts_with("stop[0]:")));
    assert!(problems.iter().any(|p| p.starts_with("dedupeKey:")));
    assert!(problems.iter().any(|p| p.contains("reserved")));
}

#[test]
fn template_values_render_as_written() {
    let req =
        parse(r#"{"templateId":"t","templateVariables":{"a":"s","b":2.5,"c":true}}"#).unwrap();
    let vars = req.template_variables.unwrap();
    assert_eq!(vars["a"].render(), "s");
    assert_eq!(vars["b"].render(), "2.5");
    assert_eq!(vars["c"].render(), "true");
}

mod write_json {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{
        FunctionCall, PriorityClass, PriorityDiagnostics, ProviderTimings, ToolCall,
    };

    fn text() -> impl Strategy<Value = String> {
        "[a-z0-9 _:\"\\\\\n\t\u{1}é€]{0,12}"
    }

    prop_compose! {
        fn diagnostics()(
            summary in any::<bool>(),
            applied in any::<bool>(),
            reasons in proptest::collection::vec(text(), 0..3),
            tokens in any::<(u32, u32, u32, u32)>(),
            family in text(),
            short in any::<bool>(),
            chars in any::<(u64, u64, u64)>(),
            scheduler in proptest::option::of((any::<(u32, u32, u8, bool, u64)>(), text(), proptest::option::of(text()), 0usize..3)),
            provider in proptest::option::of((text(), proptest::option::of(text()), proptest::option::of(1.5f64..900.0))),
            routing in proptest::option::of((text(), text(), proptest::option::of(text()), proptest::collection::vec(text(), 0..2))),
            clamped in proptest::collection::vec((text(), -2.0f64..2.0), 0..2),
        ) -> Diagnostics {
            let lane = if short { Lane::Short } else { Lane::Draft };
            let mut diagnostics = Diagnostics {
                detail: if summary { DiagnosticsDetail::Summary } else { DiagnosticsDetail::Full },
                ..Diagnostics::default()
            };
            diagnostics.degradation.applied = applied;
            diagnostics.degradation.reasons = reasons;
            diagnostics.degradation.requested_max_tokens = tokens.0;
            diagnostics.degradation.applied_max_tokens = tokens.1;
            diagnostics.degradation.queue_depth = tokens.2;
            diagnostics.prompt_compiler = PromptCompilerDiagnostics {
                family_key: family,
                lane,
                chars_before: chars.0,
                chars_after: chars.1,
                chars_saved: chars.2,
            };
            diagnostics.learned_output_cap.applied = applied;
            diagnostics.learned_output_cap.applied_max_tokens = tokens.3;
            diagnostics.adaptive_tuning.reduced = !applied;
            diagnostics.adaptive_tuning.applied_max_tokens = tokens.2;
            diagnostics.scheduler = scheduler.map(|((prompt, cost, level, clamped, wait), source, requested, class)| {
                SchedulerDiagnostics {
                    lane,
                    prompt_tokens: prompt,
                    prompt_tokens_source: source.into(),
                    cost_tokens: cost,
                    priority: PriorityDiagnostics {
                        class: PriorityClass::ALL[class],
                        level,
                        requested,
                        clamped,
                        queue_wait_ms: wait,
                    },
                }
            });
            diagnostics.provider = provider.map(|(shape, format, total)| ProviderDiagnostics {
                request_shape: shape.into(),
                prompt_format: format,
                timings: total.map(|total| ProviderTimings { total_ms: Some(total), ..ProviderTimings::default() }),
                ..ProviderDiagnostics::default()
            });
            diagnostics.routing = routing.map(|(model, chosen_by, fallback_from, skipped)| RoutingDiagnostics {
                model,
                chosen_by: chosen_by.into(),
                fallback_from,
                skipped,
            });
            diagnostics.clamped = clamped
                .into_iter()
                .map(|(param, requested)| ParameterClamp {
                    param,
                    requested,
                    applied: requested / 2.0,
                    limit: "maxTokens".into(),
                })
                .collect();
            diagnostics
        }
    }

    prop_compose! {
        fn response()(
            id in text(),
            model in text(),
            output in "\\PC{0,60}",
            counts in any::<(u64, u64, u64)>(),
            tokens in proptest::option::of(any::<(u64, u64, u64)>()),
            flags in any::<(bool, bool, bool)>(),
            times in any::<(u64, u64)>(),
            diagnostics in diagnostics(),
            finish in proptest::option::of(0usize..3),
            created_at in text(),
            tool_call in proptest::option::of((text(), text())),
            logprob in proptest::option::of(-5.0f64..0.0),
        ) -> InferResponse {
            let triple = |(prompt, completion, total)| CountTriple { prompt, completion, total };
            InferResponse {
                id,
                model,
                output,
                usage: Usage { chars: triple(counts), tokens: tokens.map(triple) },
                cached: flags.0,
                deduplicated: flags.1,
                queue_time_ms: times.0,
                latency_ms: times.1,
                degraded: flags.2,
                diagnostics: Box::new(diagnostics),
                finish_reason: finish.map(|index| [FinishReason::Stop, FinishReason::Length, FinishReason::ToolCalls][index]),
                created_at,
                tool_calls: tool_call.map(|(name, arguments)| vec![ToolCall {
                    id: "call_1".into(),
                    kind: "function".into(),
                    function: FunctionCall { name, arguments },
                }]),
                logprobs: logprob.map(|logprob| vec![serde_json::json!({"token": "a", "logprob": logprob})]),
            }
        }
    }

    proptest! {
        /// The hand-written JSON is the JSON serde writes, for summaries and full diagnostics.
        #[test]
        fn is_what_serde_writes(response in response()) {
            let mut out = String::from("prefix");
            response.write_json(&mut out);
            prop_assert_eq!(&out["prefix".len()..], serde_json::to_string(&response).unwrap());
        }
    }
}
