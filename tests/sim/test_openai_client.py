"""The official `openai` Python client against the simulated replica: the shapes it parses, the errors it raises."""

import asyncio

import openai
import pytest

from tests.support.sim_replica import MODEL, PROFILE, running_replica


def with_client(fn, **kw):
    async def go():
        async with running_replica(**kw) as (url, rep):
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
            try:
                return await fn(client, rep)
            finally:
                await client.close()

    return asyncio.run(go())


def test_completions_and_chat_parse_in_the_official_client():
    async def go(client, rep):
        models = await client.models.list()
        assert [m.id for m in models.data] == [MODEL]
        c = await client.completions.create(
            model=MODEL, prompt="hello there", max_tokens=5, extra_body={"ignore_eos": True}
        )
        assert c.object == "text_completion" and c.choices[0].finish_reason == "length"
        assert c.usage.prompt_tokens == 3 and c.usage.completion_tokens == 5 and c.usage.total_tokens == 8
        assert len(c.choices[0].text.split()) == 5
        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            max_completion_tokens=4, extra_body={"ignore_eos": True},
        )  # fmt: skip
        msg = chat.choices[0].message
        assert chat.object == "chat.completion" and msg.role == "assistant" and len(msg.content.split()) == 4
        assert chat.usage.completion_tokens == 4 and chat.usage.prompt_tokens == 3 + (3 + 2) + (3 + 1)
        # without ignore_eos the simulated model may stop early, and says so
        c = await client.completions.create(model=MODEL, prompt="x", max_tokens=2000)
        assert c.choices[0].finish_reason in ("stop", "length") and 1 <= c.usage.completion_tokens <= 2000

    with_client(go)


def test_streaming_with_usage_in_the_official_client():
    async def go(client, rep):
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=7, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )  # fmt: skip
        chunks = [c async for c in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(content) == 7
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7
        stream = await client.completions.create(
            model=MODEL, prompt=[1, 2, 3, 4], max_tokens=3, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].text for c in chunks if c.choices).count(" ") == 3
        assert chunks[-1].usage.prompt_tokens == 4 and chunks[-1].usage.completion_tokens == 3

    with_client(go)


@pytest.mark.parametrize(
    "kw, error, param",
    [
        ({"model": "other-model"}, openai.NotFoundError, "model"),
        ({"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
        ({"max_tokens": PROFILE.max_model_len}, openai.BadRequestError, "max_tokens"),
        ({"n": 2}, openai.BadRequestError, "n"),
    ],
)
def test_errors_raise_the_official_clients_exceptions(kw, error, param):
    async def go(client, rep):
        args = {"model": MODEL, "prompt": "hello", "max_tokens": 5} | kw
        with pytest.raises(error) as info:
            await client.completions.create(**args)
        assert info.value.body["param"] == param and info.value.body["message"]
        with pytest.raises(error):
            chat = {k: v for k, v in args.items() if k != "prompt"} | {
                "messages": [{"role": "user", "content": "x"}]
            }
            await client.chat.completions.create(**chat)

    with_client(go)


def test_cold_start_is_a_503_the_client_can_retry_on():
    async def go(client, rep):
        with pytest.raises(openai.InternalServerError) as info:
            await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert info.value.status_code == 503 and "loading" in info.value.body["message"]

    with_client(go, cold_start_s=60.0)
