"""The normalizing of the schema snapshot (tests/support/schema.py): what varies between two dumps
of one schema goes, the schema stays."""

from __future__ import annotations

from tests.support import schema


def test_normalizing_drops_only_what_varies_between_dumps_of_one_schema() -> None:
    dump = (
        "--\n-- PostgreSQL database dump\n--\n\n"
        "\\restrict AbC123\n\n"
        "-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\n"
        "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n\n\n"
        "CREATE TABLE harvester.t (\n    id integer   \n);\n\n"
        "\\unrestrict AbC123\n"
    )
    body = schema.normalize(dump).split("\n", 3)[3]  # past the three header lines
    assert body == "\n--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE harvester.t (\n    id integer\n);\n"
