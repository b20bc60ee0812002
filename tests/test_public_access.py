"""A public Space with many visitors: whose token pays for a push, and who may
see or change a run. Handlers are called as plain functions with gradio
Requests built the way gradio builds them (a user name, or a visitor cookie)."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import gradio as gr
import pytest

from finetune_core.runs.ownership import Visitor, set_showcase, write_owner
from finetune_core.runs.store import get_run

TOKEN = "hf_" + "VisitorTypedT0ken0123456789abcdef"
SERVER_TOKEN = "hf_" + "OwnerServerT0ken0123456789abcdef"


def as_user(name: str) -> gr.Request:
    return gr.Request(username=name, session_hash=f"s-{name}", cookies={})


def as_browser(key: str) -> gr.Request:
    return gr.Request(session_hash=f"s-{key}", cookies={"studio_visitor": key})


def as_oauth(name: str, token: str) -> gr.Request:
    info = {"access_token": token, "userinfo": {"preferred_username": name}}
    return gr.Request(session_hash=f"s-{name}", cookies={}, session={"oauth_info": info})


ALICE_BROWSER, BOB_BROWSER = "alice-browser-key-0123456789", "bob-browser-key-0123456789ab"


@pytest.fixture()
def env(trained_run, runs_root, tmp_path, monkeypatch):
    """Two copies of the trained run: one started by alice (signed in), one by an
    anonymous browser; an AppContext with private exports; no deployment flags."""
    from ui.context import AppContext

    for name in ("STUDIO_REQUIRE_LOGIN", "APP_AUTH", "STUDIO_PUBLIC", "STUDIO_ADMINS", "HF_TOKEN",
                 "STUDIO_ALLOW_SERVER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    alice_run = runs_root / trained_run.id
    shutil.copytree(trained_run.path, alice_run)
    write_owner(alice_run, {"user": "alice"})
    anon_id = trained_run.id[:-6] + "abcdef"
    shutil.copytree(trained_run.path, runs_root / anon_id)
    write_owner(runs_root / anon_id, Visitor.from_browser_key(ALICE_BROWSER).owner_record())
    ctx = AppContext()
    ctx.settings.exports_dir = tmp_path / "exports"
    return SimpleNamespace(ctx=ctx, root=runs_root, user_run=trained_run.id, anon_run=anon_id, mp=monkeypatch)


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records which token each call used."""

    calls: list = []
    existing: set = set()

    def __init__(self, token=None):
        self.token = token
        FakeHub.calls.append(("init", token))

    def repo_exists(self, repo_id, repo_type="model"):
        return repo_id in FakeHub.existing

    def create_repo(self, repo_id, private=True, exist_ok=False, repo_type="model"):
        if repo_id in FakeHub.existing and not exist_ok:
            raise RuntimeError("409 repo exists")
        FakeHub.calls.append(("create", self.token, repo_id, exist_ok))
        return f"https://hub.example/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type="model", commit_message=""):
        FakeHub.calls.append(("upload", self.token, repo_id))


@pytest.fixture()
def hub(env, monkeypatch):
    import huggingface_hub

    from finetune_core.export import artifacts as export

    FakeHub.calls, FakeHub.existing = [], set()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    monkeypatch.setattr(export, "check_hub_online", lambda: None)
    return FakeHub


# -- the owner's token (finding 1) ------------------------------------------------------------------------
def test_push_never_spends_the_servers_token_for_a_visitor(env, hub):
    from ui import export_tab

    env.mp.setenv("HF_TOKEN", SERVER_TOKEN)
    env.mp.setenv("STUDIO_PUBLIC", "1")
    for request in (as_browser(BOB_BROWSER), None):
        with pytest.raises(gr.Error, match="does not lend its own token"):
            export_tab.push(env.ctx, env.anon_run, "owner/model", "", request=request)
    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    env.mp.setenv("STUDIO_ALLOW_SERVER_TOKEN", "1")  # allowed, but only for admins: alice is not one
    with pytest.raises(gr.Error, match="does not lend"):
        export_tab.push(env.ctx, env.user_run, "owner/model", "", request=as_user("alice"))
    assert hub.calls == []


def test_push_uses_the_visitors_own_token(env, hub):
    from ui import export_tab

    env.mp.setenv("HF_TOKEN", SERVER_TOKEN)
    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    text, cleared = export_tab.push(env.ctx, env.user_run, "alice/model", TOKEN, request=as_user("alice"))
    assert "alice/model" in text and cleared["value"] == ""
    oauth = "hf_" + "AliceOAuthT0ken0123456789abcdef"
    export_tab.push(env.ctx, env.user_run, "alice/model2", "", request=as_oauth("alice", oauth))
    assert {c[1] for c in hub.calls if c[0] == "upload"} == {TOKEN, oauth}
    assert SERVER_TOKEN not in str(hub.calls)


def test_server_token_only_for_admins_when_allowed(env, hub):
    from ui import export_tab

    env.mp.setenv("HF_TOKEN", SERVER_TOKEN)
    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    env.mp.setenv("STUDIO_ADMINS", "root")
    with pytest.raises(gr.Error, match="does not lend"):  # admin, but the owner did not allow it
        export_tab.push(env.ctx, env.user_run, "org/model", "", request=as_user("root"))
    env.mp.setenv("STUDIO_ALLOW_SERVER_TOKEN", "1")
    export_tab.push(env.ctx, env.user_run, "org/model", "", request=as_user("root"))
    assert ("upload", SERVER_TOKEN, "org/model") in hub.calls


def test_existing_repo_is_not_overwritten_without_asking(env, hub):
    from ui import export_tab

    hub.existing.add("alice/taken")
    with pytest.raises(gr.Error, match="already exists"):
        export_tab.push(env.ctx, env.user_run, "alice/taken", TOKEN)
    assert not [c for c in hub.calls if c[0] in ("create", "upload")]
    export_tab.push(env.ctx, env.user_run, "alice/taken", TOKEN, overwrite=True)
    assert ("create", TOKEN, "alice/taken", True) in hub.calls


# -- ownership with login (finding 2) ---------------------------------------------------------------------
def test_with_login_a_second_user_can_do_nothing_to_the_first_users_run(env):
    from ui import chat_tab, eval_tab, export_tab, train_tab, train_views

    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    bob, run_id, ctx = as_user("bob"), env.user_run, env.ctx
    who = Visitor(user="bob")
    assert run_id not in [v for _, v in eval_tab.run_choices(who)]
    assert run_id not in [v for _, v in export_tab.run_choices(who)]
    assert "run:" + run_id not in [v for _, v in chat_tab.run_choices("bundled", who)]
    assert get_run(run_id).name not in set(train_views.runs_table(who)["name"])  # the table lists names
    assert "That run is gone" in train_views.run_view(run_id, who)[0]
    attempts = [
        lambda: eval_tab.show_run(run_id, who=who),
        lambda: eval_tab.order_examples(run_id, eval_tab.ORDERS[0], who),
        lambda: eval_tab.evaluate(ctx, run_id, request=bob),
        lambda: eval_tab.export_results(ctx, run_id, request=bob),
        lambda: export_tab.download_adapter(ctx, run_id, request=bob),
        lambda: export_tab.download_report(ctx, run_id, request=bob),
        lambda: export_tab.push(ctx, run_id, "bob/stolen", TOKEN, request=bob),
        lambda: train_tab.resume_training(ctx, run_id, who),
        lambda: chat_tab.check_model_key(ctx, "run:" + run_id, who),
    ]
    for attempt in attempts:
        with pytest.raises(gr.Error) as err:
            attempt()
        assert "does not exist" in str(err.value)  # the same words as a missing run: nothing confirmed
    assert not ctx.settings.exports_dir.exists() or not any(ctx.settings.exports_dir.iterdir())
    # alice herself may
    alice = Visitor(user="alice")
    assert run_id in [v for _, v in eval_tab.run_choices(alice)]
    assert export_tab.download_adapter(ctx, run_id, request=as_user("alice"))


def test_stop_is_refused_to_anyone_but_the_runs_owner(env):
    from ui import train_tab, train_views

    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    from finetune_core.runs.store import get_run

    stopped = []
    job = SimpleNamespace(run=get_run(env.user_run))
    env.mp.setattr(env.ctx.slot, "active", lambda: job)
    env.mp.setattr(env.ctx.slot, "stop", lambda: stopped.append(True) or True)
    with pytest.raises(gr.Error, match="does not exist"):
        train_tab.stop_training(env.ctx, Visitor(user="bob"))
    assert stopped == []
    # the Train tab of another user does not even watch the job
    assert train_views.watched_run_id(env.ctx, None, Visitor(user="bob")) is None
    assert train_tab.stop_training(env.ctx, Visitor(user="alice")) and stopped == [True]


def test_showcase_runs_are_shared_read_only(env):
    from ui import chat_tab, eval_tab, train_tab

    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    env.mp.setenv("STUDIO_ADMINS", "root")
    run_path = env.root / env.user_run
    with pytest.raises(PermissionError):
        set_showcase(run_path, Visitor(user="alice"), True)  # owners cannot, admins can
    set_showcase(run_path, Visitor(user="root"), True)
    bob = Visitor(user="bob")
    assert env.user_run in [v for _, v in eval_tab.run_choices(bob)]
    assert eval_tab.show_run(env.user_run, who=bob).status
    assert chat_tab.check_model_key(env.ctx, "run:" + env.user_run, bob)  # stakeholders chat and vote
    for attempt in (lambda: eval_tab.evaluate(env.ctx, env.user_run, request=as_user("bob")),
                    lambda: train_tab.resume_training(env.ctx, env.user_run, bob)):
        with pytest.raises(gr.Error, match="Only the person who started"):
            attempt()


# -- a public deployment without login -------------------------------------------------------------------
def test_without_login_everything_is_visible_but_only_the_starting_browser_changes_it(env):
    from ui import eval_tab, train_tab

    env.mp.setenv("STUDIO_PUBLIC", "1")
    bob = Visitor.from_browser_key(BOB_BROWSER)
    assert env.anon_run in [v for _, v in eval_tab.run_choices(bob)]  # shared, and the page says so
    assert eval_tab.show_run(env.anon_run, who=bob).status
    with pytest.raises(gr.Error, match="Only the person who started"):
        eval_tab.evaluate(env.ctx, env.anon_run, request=as_browser(BOB_BROWSER))
    with pytest.raises(gr.Error, match="Only the person who started"):
        train_tab.resume_training(env.ctx, env.anon_run, bob)
    alice = Visitor.from_browser_key(ALICE_BROWSER)
    with pytest.raises(gr.Error, match="completed"):  # allowed past the owner check: the run is done
        train_tab.resume_training(env.ctx, env.anon_run, alice)


def test_chat_refuses_models_outside_the_list(env):
    from ui import chat_tab

    for key in ("base:Qwen/Qwen2.5-72B-Instruct", "base:/etc", 5, None, "run:../../x"):
        with pytest.raises(gr.Error):
            chat_tab.check_model_key(env.ctx, key)
    assert chat_tab.check_model_key(env.ctx, "base:" + env.ctx.settings.default_model)


@pytest.mark.parametrize("bad", [20260101, 3.5, ["x"], {"a": 1}, "../x"])
def test_run_ids_of_any_type_get_a_clear_message(env, bad):
    from ui import eval_tab, export_tab

    for attempt in (lambda: eval_tab.show_run(bad), lambda: export_tab.download_report(env.ctx, bad)):
        with pytest.raises(gr.Error):
            attempt()


# -- public mode, whole (finding 5) ------------------------------------------------------------------------
def test_public_mode_allows_only_catalogue_models_under_the_size_ceiling(monkeypatch):
    from ui.train_tab import check_model

    monkeypatch.delenv("STUDIO_MODEL_ALLOWLIST", raising=False)
    monkeypatch.delenv("STUDIO_MAX_PARAMS_B", raising=False)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    with pytest.raises(gr.Error, match="allow-list"):
        check_model("meta-llama/Llama-3.1-405B-Instruct")
    check_model("Qwen/Qwen2.5-0.5B-Instruct")  # in the catalogue, under 4B: no download needed to say so
    monkeypatch.setenv("STUDIO_MAX_PARAMS_B", "1")
    with pytest.raises(gr.Error, match=r"3\.82B parameters, over this server's limit of 1B"):
        check_model("microsoft/Phi-3.5-mini-instruct")


def test_size_ceiling_counts_parameters_from_the_config_alone(tiny_model_dir, monkeypatch):
    from finetune_core.models.sources import count_params_b
    from ui.train_tab import check_model

    monkeypatch.delenv("STUDIO_PUBLIC", raising=False)
    size = count_params_b(str(tiny_model_dir))
    assert 0 < size < 0.01  # the tiny test model: a few million parameters, read without its weights
    monkeypatch.setenv("STUDIO_MAX_PARAMS_B", f"{size / 2:.9f}")
    with pytest.raises(gr.Error, match="STUDIO_MAX_PARAMS_B"):
        check_model(str(tiny_model_dir))
    monkeypatch.setenv("STUDIO_MAX_PARAMS_B", "1")
    check_model(str(tiny_model_dir))


def test_public_mode_trusts_only_its_own_run_folders(trained_run, runs_root, tiny_model_dir, monkeypatch):
    """A full fine-tune's output is a folder: on a public deployment the app still loads
    its own runs' saved models back, and nothing else from disk."""
    from finetune_core.models.sources import ModelError, resolve_model_source

    shutil.copytree(tiny_model_dir, runs_root / trained_run.id / "adapter", dirs_exist_ok=True)
    monkeypatch.setenv("STUDIO_PUBLIC", "1")
    own = runs_root / trained_run.id / "adapter"
    assert resolve_model_source(str(own)) == str(own)
    for other in (tiny_model_dir, own / ".." / ".." / ".." / tiny_model_dir.name, runs_root / trained_run.id):
        with pytest.raises(ModelError, match="disabled"):
            resolve_model_source(str(other))


def test_runs_are_deleted_only_by_their_owner_and_never_while_training(env):
    from finetune_core.runs.store import get_run
    from ui import train_tab

    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    with pytest.raises(gr.Error, match="does not exist"):
        train_tab.delete_run(env.ctx, env.user_run, Visitor(user="bob"))
    job = SimpleNamespace(run=get_run(env.user_run))
    env.mp.setattr(env.ctx.slot, "active", lambda: job)
    with pytest.raises(gr.Error, match="stop it first"):
        train_tab.delete_run(env.ctx, env.user_run, Visitor(user="alice"))
    assert (env.root / env.user_run / "adapter").is_dir()
    env.mp.setattr(env.ctx.slot, "active", lambda: None)
    assert train_tab.delete_run(env.ctx, env.user_run, Visitor(user="alice")) == env.user_run
    assert sorted(p.name for p in env.root.iterdir()) == [env.anon_run]  # nothing half-deleted left


def test_chat_stream_step_uses_only_the_model_its_turn_was_admitted_for(env):
    """Calling the streaming step directly with another visitor's run sends nothing."""
    from ui import chat_tab

    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    loads = []
    env.mp.setattr(env.ctx.models, "get", lambda key, progress=None: loads.append(key))
    base = "base:" + env.ctx.settings.default_model
    with pytest.raises(gr.Error, match="does not exist"):
        chat_tab.begin_send(env.ctx, None, "hi", "run:" + env.user_run, False, request=as_user("bob"))
    session = chat_tab.begin_send(env.ctx, None, "hi", base, False, request=as_user("bob"))[0]
    list(chat_tab.stream_reply(env.ctx, session, "hi", "run:" + env.user_run, "", 0.0, 1.0, 8, 0))
    assert loads == [] and session.base_history == []


def test_hub_note_says_whose_token_a_push_uses(env):
    from ui.export_tab import hub_note

    env.mp.delenv("HF_HUB_OFFLINE", raising=False)
    env.mp.setenv("HF_TOKEN", SERVER_TOKEN)
    assert "never stored" in hub_note()  # not allowed: nobody is told to leave the field empty
    env.mp.setenv("STUDIO_ALLOW_SERVER_TOKEN", "1")
    assert "leave the token field empty" in hub_note()  # a local app's one user
    env.mp.setenv("STUDIO_REQUIRE_LOGIN", "1")
    env.mp.setenv("STUDIO_ADMINS", "root")
    assert "admins may leave it empty" in hub_note()
