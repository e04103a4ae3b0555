"""Where AWS regions are, and the round trip estimated from the distance between them.

This is the fallback of :mod:`georelay_model.latency`, used only for a region the measured
matrix lacks (a region newer than the data) and said so wherever an order depends on it.
Cables do not follow great circles: held against measured region-to-region round trips the
estimate misorders the next-nearest region in about 1 of 7 three-region fleets (from
ap-southeast-2 it prefers af-south-1, 411 ms, to us-west-1, 138 ms), which is why it is not
the default any more (docs/DNS.md, "Region latency").

Each region is placed at its metro's coordinates; the round trip is estimated from the
great-circle distance as light in fibre (about 200 km per ms) over a path 1.5 times longer
than the great circle, there and back, plus 2 ms of switching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FIBRE_KM_PER_MS = 200.0  # light in fibre, one way
PATH_STRETCH = 1.5  # real cable routes are longer than the great circle
SWITCHING_MS = 2.0  # round-trip overhead of routers and the last mile inside AWS
EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class RegionSite:
    code: str
    city: str
    lat: float
    lon: float


_SITES: tuple[RegionSite, ...] = (
    RegionSite("us-east-1", "N. Virginia", 38.9, -77.4),
    RegionSite("us-east-2", "Ohio", 40.0, -83.0),
    RegionSite("us-west-1", "N. California", 37.4, -121.9),
    RegionSite("us-west-2", "Oregon", 45.8, -119.7),
    RegionSite("us-gov-east-1", "Ohio (GovCloud)", 40.0, -83.0),
    RegionSite("us-gov-west-1", "Oregon (GovCloud)", 45.6, -121.2),
    RegionSite("ca-central-1", "Montreal", 45.5, -73.6),
    RegionSite("ca-west-1", "Calgary", 51.0, -114.1),
    RegionSite("mx-central-1", "Queretaro", 20.6, -100.4),
    RegionSite("sa-east-1", "Sao Paulo", -23.5, -46.6),
    RegionSite("eu-west-1", "Dublin", 53.3, -6.3),
    RegionSite("eu-west-2", "London", 51.5, -0.1),
    RegionSite("eu-west-3", "Paris", 48.9, 2.35),
    RegionSite("eu-central-1", "Frankfurt", 50.1, 8.7),
    RegionSite("eu-central-2", "Zurich", 47.4, 8.5),
    RegionSite("eu-north-1", "Stockholm", 59.3, 18.1),
    RegionSite("eu-south-1", "Milan", 45.5, 9.2),
    RegionSite("eu-south-2", "Aragon", 41.6, -0.9),
    RegionSite("il-central-1", "Tel Aviv", 32.1, 34.8),
    RegionSite("me-south-1", "Bahrain", 26.1, 50.6),
    RegionSite("me-central-1", "UAE", 25.2, 55.3),
    RegionSite("af-south-1", "Cape Town", -33.9, 18.4),
    RegionSite("ap-south-1", "Mumbai", 19.1, 72.9),
    RegionSite("ap-south-2", "Hyderabad", 17.4, 78.5),
    RegionSite("ap-east-1", "Hong Kong", 22.3, 114.2),
    RegionSite("ap-east-2", "Taipei", 25.0, 121.6),
    RegionSite("ap-southeast-1", "Singapore", 1.35, 103.8),
    RegionSite("ap-southeast-2", "Sydney", -33.9, 151.2),
    RegionSite("ap-southeast-3", "Jakarta", -6.2, 106.8),
    RegionSite("ap-southeast-4", "Melbourne", -37.8, 145.0),
    RegionSite("ap-southeast-5", "Kuala Lumpur", 3.1, 101.7),
    RegionSite("ap-southeast-6", "Auckland", -36.8, 174.8),
    RegionSite("ap-southeast-7", "Bangkok", 13.75, 100.5),
    RegionSite("ap-northeast-1", "Tokyo", 35.7, 139.7),
    RegionSite("ap-northeast-2", "Seoul", 37.6, 127.0),
    RegionSite("ap-northeast-3", "Osaka", 34.7, 135.5),
)

SITES: dict[str, RegionSite] = {s.code: s for s in _SITES}


def _distance_km(a: RegionSite, b: RegionSite) -> float:
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def rtt_ms(a: str, b: str) -> float:
    """Estimated round trip between two regions in ms (0 within a region).

    Raises KeyError for a region not in the table (see :data:`SITES`).
    """
    if a == b:
        return 0.0
    km = _distance_km(SITES[a], SITES[b])
    return round(2 * km * PATH_STRETCH / FIBRE_KM_PER_MS + SWITCHING_MS, 1)

