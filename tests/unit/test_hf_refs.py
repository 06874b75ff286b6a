"""hearth.tools.cli.hf_refs: what a REF means, which repo file a quant picks, split sets, and
the sha256 an ETag carries. Pure functions: no network."""

from __future__ import annotations

import pytest
from hearth.tools.cli.hf_refs import (
    HfFileRef,
    HfRepoRef,
    RefError,
    RepoFile,
    UrlRef,
    choose_model,
    group_models,
    model_files_for_path,
    parse_ref,
    sha256_from_etag,
    split_name,
    split_part_names,
)

SHA = "a" * 64

# ---- parse_ref ----------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "expected"), [
    ("bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
     HfRepoRef("bartowski", "Qwen2.5-0.5B-Instruct-GGUF", "Q4_K_M")),
    ("hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:q8_0",
     HfRepoRef("bartowski", "Qwen2.5-0.5B-Instruct-GGUF", "q8_0")),
    ("HuggingFace.co/owner/repo", HfRepoRef("owner", "repo", None)),
    ("owner/repo", HfRepoRef("owner", "repo", None)),
    ("owner/repo/model-Q4_K_M.gguf", HfFileRef("owner", "repo", "model-Q4_K_M.gguf")),
    ("owner/repo/sub dir/m.GGUF", HfFileRef("owner", "repo", "sub dir/m.GGUF")),
    ("owner/repo/Q8_0/m-00001-of-00002.gguf",
     HfFileRef("owner", "repo", "Q8_0/m-00001-of-00002.gguf")),
    ("https://example.org/models/tiny.gguf", UrlRef("https://example.org/models/tiny.gguf")),
    ("http://127.0.0.1:8000/a/tiny.gguf?download=1",
     UrlRef("http://127.0.0.1:8000/a/tiny.gguf?download=1")),
])
def test_parse_ref(ref: str, expected: object) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(("ref", "says"), [
    ("", "empty"),
    ("   ", "empty"),
    ("https://example.org/models/tiny.bin", "must name a .gguf"),
    ("https://example.org.gguf", "no file path"),
    ("ftp://example.org/tiny.gguf", "only http"),
    ("smollm", "not a catalogue name"),  # a bare word that is no catalogue name
    ("owner/repo/readme.md", "not a catalogue name"),
    ("owner/repo:Q4 K", "not a catalogue name"),
    ("-owner/repo", "not a catalogue name"),
    ("owner/repo/../x.gguf", "bad file path"),
    ("owner/repo//x.gguf", "bad file path"),
    ("a/b/c", "not a catalogue name"),
])
def test_bad_refs(ref: str, says: str) -> None:
    with pytest.raises(RefError, match=says):
        parse_ref(ref)


# ---- split names ---------------------------------------------------------------------------


def test_split_name() -> None:
    assert split_name("Model-Q4_K_M-00002-of-00003.gguf") == ("Model-Q4_K_M", 2, 3)
    assert split_name("m-00001-of-00001.GGUF") == ("m", 1, 1)
    assert split_name("m-00004-of-00003.gguf") is None  # part past the count
    assert split_name("m-00000-of-00003.gguf") is None  # parts count from 1
    assert split_name("m-0001-of-0003.gguf") is None  # llama.cpp writes five digits
    assert split_name("m.gguf") is None


def test_split_part_names() -> None:
    assert split_part_names("m", 3) == ["m-00001-of-00003.gguf", "m-00002-of-00003.gguf",
                                        "m-00003-of-00003.gguf"]


def test_model_files_for_a_split_path_names_every_part() -> None:
    m = model_files_for_path("Q8_0/m-00002-of-00003.gguf",
                             {"Q8_0/m-00001-of-00003.gguf": RepoFile("Q8_0/m-00001-of-00003.gguf",
                                                                     10, SHA)})
    assert m.model_id == "m" and m.is_split
    assert [f.path for f in m.files] == [f"Q8_0/m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert m.files[0].size == 10 and m.files[1].size is None
    single = model_files_for_path("a/b.gguf")
    assert single.model_id == "b" and not single.is_split
    assert single.files == (RepoFile("a/b.gguf"),)


# ---- grouping and choosing -------------------------------------------------------------------

REPO = [RepoFile(p) for p in (
    "README.md",
    "Qwen-Q4_K_M.gguf",
    "Qwen-Q4_K_S.gguf",
    "Qwen-IQ4_XS.gguf",
    "Qwen-Q4_XS.gguf",
    "Qwen-Q8_0.gguf",
    "Qwen_UD-Q4_K_XL.gguf",
    "mmproj-Qwen-f16.gguf",
    "Q6_K/Qwen-Q6_K-00001-of-00002.gguf",
    "Q6_K/Qwen-Q6_K-00002-of-00002.gguf",
    "BF16/Qwen-BF16-00001-of-00003.gguf",
    "BF16/Qwen-BF16-00003-of-00003.gguf",  # part 2 missing
)]


def test_group_models_keeps_split_sets_whole() -> None:
    models, problems = group_models(REPO)
    ids = [m.model_id for m in models]
    assert ids == ["Qwen-Q6_K", "Qwen-IQ4_XS", "Qwen-Q4_K_M", "Qwen-Q4_K_S", "Qwen-Q4_XS",
                   "Qwen-Q8_0", "Qwen_UD-Q4_K_XL"]  # in path order; no mmproj, no README
    (q6,) = [m for m in models if m.model_id == "Qwen-Q6_K"]
    assert [f.path.rsplit("/", 1)[1] for f in q6.files] == [
        "Qwen-Q6_K-00001-of-00002.gguf", "Qwen-Q6_K-00002-of-00002.gguf"]
    assert problems == ["BF16/Qwen-BF16: split set of 3 parts lacks part(s) 2"]


@pytest.mark.parametrize(("quant", "chosen"), [
    ("Q4_K_M", "Qwen-Q4_K_M.gguf"),
    ("q4_k_m", "Qwen-Q4_K_M.gguf"),  # case-insensitive
    ("Q4_XS", "Qwen-Q4_XS.gguf"),  # not IQ4_XS
    ("IQ4_XS", "Qwen-IQ4_XS.gguf"),
    ("Q4_K_XL", "Qwen_UD-Q4_K_XL.gguf"),
    ("Q8_0", "Qwen-Q8_0.gguf"),
    ("Q6_K", "Q6_K/Qwen-Q6_K-00001-of-00002.gguf"),  # a split set is one choice
])
def test_choose_model_by_quant(quant: str, chosen: str) -> None:
    assert choose_model(REPO, HfRepoRef("o", "r", quant)).files[0].path == chosen


def test_choose_model_quant_matches_a_whole_word_only() -> None:
    # "Q4_K" is a prefix of Q4_K_M and Q4_K_S but names neither
    with pytest.raises(RefError, match=r"no GGUF in o/r matches 'Q4_K'; it has: .*Qwen-Q4_K_M"):
        choose_model(REPO, HfRepoRef("o", "r", "Q4_K"))


def test_choose_model_ambiguous_lists_the_matches() -> None:
    files = [RepoFile("a-Q4_0.gguf"), RepoFile("b-Q4_0.gguf"), RepoFile("c-Q8_0.gguf")]
    with pytest.raises(RefError) as info:
        choose_model(files, HfRepoRef("o", "r", "Q4_0"))
    msg = str(info.value)
    assert "several GGUFs in o/r match 'Q4_0': a-Q4_0.gguf, b-Q4_0.gguf" in msg
    assert "c-Q8_0" not in msg and "\n" not in msg


def test_choose_model_without_quant() -> None:
    only = [RepoFile("README.md"), RepoFile("m-00001-of-00002.gguf"),
            RepoFile("m-00002-of-00002.gguf"), RepoFile("mmproj-m.gguf")]
    assert choose_model(only, HfRepoRef("o", "r", None)).model_id == "m"
    with pytest.raises(RefError, match="o/r has several GGUF models: .*add :QUANT"):
        choose_model(REPO, HfRepoRef("o", "r", None))
    with pytest.raises(RefError, match="o/r has no GGUF model files"):
        choose_model([RepoFile("README.md")], HfRepoRef("o", "r", None))


# ---- sha256 from ETag ----------------------------------------------------------------------


@pytest.mark.parametrize(("etag", "sha"), [
    (f'"{SHA}"', SHA),
    (SHA.upper(), SHA),
    (f'W/"{SHA}"', SHA),
    (f" {SHA} ", SHA),
    ('"0123456789abcdef0123456789abcdef01234567"', None),  # a git blob sha1 (non-LFS file)
    ('"5d41402abc4b2a76b9719d911017c592"', None),  # an md5-like opaque tag
    ('"' + "g" * 64 + '"', None),
    ("", None),
    (None, None),
])
def test_sha256_from_etag(etag: str | None, sha: str | None) -> None:
    assert sha256_from_etag(etag) == sha
