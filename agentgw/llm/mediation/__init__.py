"""What the gateway reads or changes inside LLM traffic: declared tools and answered tool calls under the policy
(tool_policy.py, tool_stream.py for streams) and guardrail texts of requests and answers (guard_content.py,
guard_stream.py for streams)."""
