"""Word lists for realistic text, held as Arrow arrays so sampling is one vectorized ``take``."""

from __future__ import annotations

from functools import cache

import pyarrow as pa

FIRST = (
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara Richard Susan Joseph "
    "Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Betty Mark Margaret Donald Sandra Steven "
    "Ashley Paul Kimberly Andrew Emily Joshua Donna Kenneth Michelle Kevin Carol Brian Amanda George Melissa "
    "Timothy Deborah Ronald Stephanie Jason Rebecca Edward Sharon Jeffrey Laura Ryan Cynthia Jacob Kathleen Gary "
    "Amy Nicholas Angela Eric Shirley Jonathan Anna Stephen Brenda Larry Pamela Justin Emma Scott Nicole Brandon "
    "Helen Benjamin Samantha Samuel Katherine Gregory Christine Alexander Debra Frank Rachel Patrick Carolyn "
    "Raymond Janet Jack Catherine Dennis Maria Jerry Heather Tyler Diane Aaron Ruth Jose Julie Adam Olivia Nathan "
    "Joyce Henry Virginia Yuki Wei Aisha Mateo Lucia Noah Sofia Liam Chloe Arjun Priya Omar Fatima Lars Ingrid Kofi "
    "Amara Diego Elena"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis "
    "Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera "
    "Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart "
    "Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim "
    "Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo "
    "Sanders Patel Myers Long Ross Foster Jimenez Tanaka Muller Schmidt Rossi Dubois Novak Silva Kowalski Hansen "
    "Yilmaz"
).split()
WORDS = (
    "the of and to in is was for on are with as by at from that this be have it not or an which data model vector "
    "search index query system network cloud storage fast secure smart open global local digital modern simple "
    "advanced premium classic light dark green blue red black white silver golden urban rural quick bright quiet "
    "strong soft warm cold fresh natural organic wireless portable compact deluxe ultra mini pro max home garden "
    "kitchen office travel sport music video photo book game health beauty food coffee tea water energy market "
    "report study review guide update release launch design build test deploy learn share create improve analysis "
    "research science history culture policy economy finance business industry product service customer team "
    "project platform engine pipeline stream batch table record field value result signal pattern feature river "
    "mountain forest ocean city street bridge tower island valley desert lake harbor station market square morning "
    "evening winter summer spring autumn north south east west new old big small early late high low"
).split()
CITIES = (
    "London Paris Berlin Madrid Rome Vienna Prague Warsaw Amsterdam Brussels Lisbon Dublin Oslo Stockholm Helsinki "
    "Copenhagen Athens Zurich Munich Milan Barcelona Lyon Hamburg Tokyo Osaka Seoul Beijing Shanghai Singapore "
    "Mumbai Delhi Bangalore Dubai Cairo Lagos Nairobi Johannesburg Sydney Melbourne Auckland Toronto Vancouver "
    "Montreal Chicago Boston Seattle Austin Denver Miami Atlanta Phoenix Dallas Houston Portland Lima Bogota "
    "Santiago"
).split()
COUNTRIES = (
    "Germany France Spain Italy Portugal Austria Poland Netherlands Belgium Ireland Norway Sweden Finland Denmark "
    "Greece Switzerland Japan Korea China Singapore India Egypt Nigeria Kenya Australia Canada Mexico Brazil "
    "Argentina Chile Peru Colombia USA UK"
).split()
STREETS = ("Main Oak Pine Maple Cedar Elm Park Lake Hill Church High Station Mill River Bridge King Queen Market").split()
STREET_KINDS = ("Street Avenue Road Lane Boulevard Drive Way Place Court").split()
DOMAINS = ("example.com mail.test corp.example data.example inbox.test acme.example").split()
TLDS = ("com org net io dev ai").split()


@cache
def arrow_words(name: str) -> pa.Array:
    return pa.array(globals()[name], type=pa.string())
