"""The genre taxonomy: the shipped mapping, the user's override, and files that are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleeve_common.exceptions import ConfigError
from sleeve_common.genres import normalize_genre
from sleeve_scraper.exceptions import SourceError
from sleeve_scraper.taxonomy import load_taxonomy

VOCABULARY = (
    "blues",
    "classical",
    "country",
    "electronic",
    "folk",
    "hiphop",
    "jazz",
    "latin",
    "metal",
    "pop",
    "reggae",
    "rnb",
    "rock",
)


@pytest.mark.parametrize("source", ["itunes", "deezer", "musicbrainz", "spotify", "mumu-csv"])
def test_the_shipped_mapping_covers_sleeves_vocabulary(source: str) -> None:
    taxonomy = load_taxonomy(source, None)

    assert set(VOCABULARY) <= set(taxonomy.genres)
    for genre in taxonomy.genres:
        assert normalize_genre(genre) == genre
        assert taxonomy.ids(genre)


@pytest.mark.parametrize(
    ("genre_id", "name", "genre"),
    [
        ("11", "Jazz", "jazz"),
        ("1153", "Metal", "metal"),
        ("18", "Hip-Hop/Rap", "hiphop"),
        ("15", "R&B/Soul", "rnb"),
        ("17", "Dance", "electronic"),
        ("5", "Classical", "classical"),
        ("6", "Country", "country"),
        ("24", "Reggae", "reggae"),
        ("1009", "Punk", "punk"),
    ],
)
def test_apple_ids_and_names(genre_id: str, name: str, genre: str) -> None:
    taxonomy = load_taxonomy("itunes", None)

    assert taxonomy.genre_of_id(genre_id) == genre
    assert taxonomy.genre_of_name(name) == genre


@pytest.mark.parametrize(
    ("genre_id", "name", "genre"),
    [
        (129, "Jazz", "jazz"),
        (116, "Rap/Hip Hop", "hiphop"),
        (113, "Dance", "electronic"),
        (106, "Electro", "electronic"),
        (169, "Soul & Funk", "rnb"),
        (197, "Latin Music", "latin"),
        (464, "Metal", "metal"),
    ],
)
def test_deezer_ids_and_names(genre_id: int, name: str, genre: str) -> None:
    taxonomy = load_taxonomy("deezer", None)

    assert taxonomy.genre_of_id(genre_id) == genre
    assert taxonomy.genre_of_name(name) == genre


@pytest.mark.parametrize(
    ("tag", "genre"),
    [
        ("jazz", "jazz"),
        ("hip hop", "hiphop"),
        ("hip-hop", "hiphop"),
        ("rhythm & blues", "rnb"),
        ("soul", "rnb"),
        ("heavy metal", "metal"),
        ("black metal", "metal"),
        ("alternative rock", "rock"),
        ("synth-pop", "electronic"),
        ("1970s", None),
    ],
)
def test_musicbrainz_tags(tag: str, genre: str | None) -> None:
    taxonomy = load_taxonomy("musicbrainz", None)

    assert (taxonomy.genre_of_id(tag) or taxonomy.genre_of_name(tag)) == genre


@pytest.mark.parametrize(
    ("name", "genre"),
    [
        ("r&b", "rnb"),
        ("neo soul", "rnb"),
        ("pop rap", "hiphop"),  # a rap style, not pop
        ("dance pop", "pop"),
        ("album rock", "rock"),
        ("vocal jazz", "jazz"),
        ("permanent wave", "rock"),
        ("k-pop", "pop"),
        ("escape room", None),
    ],
)
def test_spotify_artist_genres(name: str, genre: str | None) -> None:
    taxonomy = load_taxonomy("spotify", None)

    assert (taxonomy.genre_of_id(name) or taxonomy.genre_of_name(name)) == genre


def test_every_label_file_genre_of_the_real_files_is_mapped_or_left_out_on_purpose() -> None:
    bandcamp = load_taxonomy("bandcamp-tsv", None)
    mumu = load_taxonomy("mumu-csv", None)

    folders = {
        "ambient": "electronic",
        "dubstep": "electronic",
        "folk": "folk",
        "hiphop_rap": "hiphop",
        "jazz": "jazz",
        "metal": "metal",
        "pop": "pop",
        "punk": "punk",
        "rock": "rock",
        "soul": "rnb",
    }
    assert {name: bandcamp.genre_of_id(name) for name in folders} == folders
    assert mumu.genre_of_id("Dance & Electronic") == "electronic"
    assert mumu.genre_of_id("Rap & Hip-Hop") == "hiphop"
    assert mumu.genre_of_id("Alternative Rock") == "rock"
    assert mumu.genre_of_id("Latin Music") == "latin"
    assert (mumu.genre_of_id("New Age"), mumu.genre_of_id("Gospel")) == (None, None)


def test_source_genres_that_are_not_sleeve_genres_map_to_nothing() -> None:
    taxonomy = load_taxonomy("deezer", None)

    assert taxonomy.genre_of_id(173) is None  # Films/Games
    assert taxonomy.genre_of_name("Films/Games") is None
    assert taxonomy.genre_of_name("") is None


def test_resolve_normalises_keeps_order_and_names_unknown_genres() -> None:
    taxonomy = load_taxonomy("itunes", None)

    assert taxonomy.resolve(["Metal", "Hip-Hop/Rap", "metal"]) == ("metal", "hiphop")
    assert taxonomy.resolve(None) == taxonomy.genres
    with pytest.raises(SourceError, match=r"the itunes source has no genre 'polka'; it knows "):
        taxonomy.resolve(["jazz", "Polka"])


def test_a_users_file_replaces_the_tables_it_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[itunes]\njazz = { ids = ["11", 1207], names = ["Bebop"], term = "bop" }\n')

    itunes = load_taxonomy("itunes", path)
    deezer = load_taxonomy("deezer", path)

    assert itunes.genres == ("jazz",)
    assert itunes.ids("jazz") == ("11", "1207")
    assert itunes.term("jazz") == "bop"
    assert itunes.genre_of_name("Bebop") == "jazz"
    assert itunes.genre_of_id("1153") is None
    assert deezer.genres == load_taxonomy("deezer", None).genres  # not named: shipped one


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[itunes\n", "not valid TOML"),
        ("[itunes]\nJazz = { ids = ['11'] }\n", "write the genre 'Jazz' as 'jazz'"),
        ("[itunes]\n'!!' = { ids = ['11'] }\n", "'!!' is not a genre name"),
        ("[itunes]\njazz = ['11']\n", "jazz must be a table"),
        ("[itunes]\njazz = { ids = [] }\n", "jazz needs ids"),
        ("[itunes]\njazz = { ids = ['11'], id = 3 }\n", "unknown keys ['id']"),
        ("[itunes]\njazz = { ids = [true] }\n", "jazz.ids: True is not a genre id"),
        ("[itunes]\njazz = { ids = '11' }\n", "jazz.ids must be a list"),
        ("[itunes]\njazz = { ids = ['11'] }\nblues = { ids = ['11'] }\n", "id 11 is under both"),
        (
            "[itunes]\njazz = { ids = ['11'], names = ['Bop'] }\n"
            "blues = { ids = ['2'], names = ['bop'] }\n",
            "name 'bop' is under both jazz and blues",
        ),
        (
            "[itunes]\njazz = { ids = ['11'], names = ['Blues'] }\nblues = { ids = ['2'] }\n",
            "a name under jazz means the genre blues",
        ),
        ("[itunes]\njazz = { ids = ['11'], term = ' ' }\n", "term must be a non-empty string"),
        ("itunes = 3\n", "must be a table of genres"),
    ],
)
def test_bad_files_are_refused_naming_the_setting(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)

    with pytest.raises(ConfigError, match="SLEEVE_SCRAPE_TAXONOMY") as caught:
        load_taxonomy("itunes", path)
    assert message in str(caught.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SLEEVE_SCRAPE_TAXONOMY: cannot read .*nope\.toml"):
        load_taxonomy("itunes", tmp_path / "nope.toml")


def test_a_source_without_a_table(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no genre table for the myspace source"):
        load_taxonomy("myspace", None)
