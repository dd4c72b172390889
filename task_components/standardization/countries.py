"""Country names and codes -> ISO 3166-1 alpha-2: the countries the test data and common feeds use.

Keys are lower-case with dots removed; each country is known by its alpha-2 and alpha-3 codes and its
usual names. Extend a pipeline's list with the standardize component's ``country_aliases`` parameter.
"""

from __future__ import annotations

_COUNTRIES: dict[str, tuple[str, ...]] = {
    "US": ("usa", "united states", "united states of america", "america", "us of a"),
    "CA": ("can", "canada"),
    "MX": ("mex", "mexico"),
    "BR": ("bra", "brazil", "brasil"),
    "AR": ("arg", "argentina"),
    "CL": ("chl", "chile"),
    "CO": ("col", "colombia"),
    "PE": ("per", "peru"),
    "GB": ("gbr", "uk", "united kingdom", "great britain", "england", "britain"),
    "IE": ("irl", "ireland"),
    "FR": ("fra", "france"),
    "DE": ("deu", "germany", "deutschland"),
    "NL": ("nld", "netherlands", "the netherlands", "holland"),
    "BE": ("bel", "belgium"),
    "LU": ("lux", "luxembourg"),
    "CH": ("che", "switzerland"),
    "AT": ("aut", "austria"),
    "IT": ("ita", "italy", "italia"),
    "ES": ("esp", "spain", "espana", "españa"),
    "PT": ("prt", "portugal"),
    "DK": ("dnk", "denmark"),
    "SE": ("swe", "sweden"),
    "NO": ("nor", "norway"),
    "FI": ("fin", "finland"),
    "IS": ("isl", "iceland"),
    "PL": ("pol", "poland"),
    "CZ": ("cze", "czechia", "czech republic"),
    "SK": ("svk", "slovakia"),
    "HU": ("hun", "hungary"),
    "RO": ("rou", "romania"),
    "BG": ("bgr", "bulgaria"),
    "GR": ("grc", "greece"),
    "TR": ("tur", "turkey", "türkiye", "turkiye"),
    "UA": ("ukr", "ukraine"),
    "RU": ("rus", "russia", "russian federation"),
    "IL": ("isr", "israel"),
    "AE": ("are", "united arab emirates", "uae"),
    "SA": ("sau", "saudi arabia"),
    "EG": ("egy", "egypt"),
    "ZA": ("zaf", "south africa"),
    "NG": ("nga", "nigeria"),
    "KE": ("ken", "kenya"),
    "MA": ("mar", "morocco"),
    "IN": ("ind", "india"),
    "PK": ("pak", "pakistan"),
    "BD": ("bgd", "bangladesh"),
    "CN": ("chn", "china", "people's republic of china"),
    "HK": ("hkg", "hong kong"),
    "TW": ("twn", "taiwan"),
    "JP": ("jpn", "japan"),
    "KR": ("kor", "south korea", "korea", "republic of korea"),
    "SG": ("sgp", "singapore"),
    "MY": ("mys", "malaysia"),
    "TH": ("tha", "thailand"),
    "VN": ("vnm", "vietnam", "viet nam"),
    "PH": ("phl", "philippines"),
    "ID": ("idn", "indonesia"),
    "AU": ("aus", "australia"),
    "NZ": ("nzl", "new zealand"),
}

COUNTRY_ALIASES: dict[str, str] = {}
for _code, _names in _COUNTRIES.items():
    COUNTRY_ALIASES[_code.lower()] = _code
    for _name in _names:
        COUNTRY_ALIASES[_name] = _code
