"""Loop closure: place recognition over keyframes (:mod:`~trianflow.loop.places`), geometric
verification giving a Sim(3) between the two places (:mod:`~trianflow.loop.verify`), a Sim(3) pose
graph (:mod:`~trianflow.loop.pose_graph`) and the correction of a finished run
(:func:`~trianflow.loop.closure.close_loops`). The VO fills a :class:`PlaceDatabase` with its keyframes
as it runs and closes the loops after the last frame (``VOConfig.loop``, ``--no-loop``)."""

from trianflow.loop.closure import LoopConfig, LoopResult, close_loops, path_length
from trianflow.loop.places import Place, PlaceConfig, PlaceDatabase, orb_features
from trianflow.loop.pose_graph import PoseGraphEdge, Sim3, optimize_pose_graph
from trianflow.loop.verify import LoopEdge, VerifyConfig, match_places, triangulate_place, verify_loop

__all__ = ["LoopConfig", "LoopResult", "close_loops", "path_length", "Place", "PlaceConfig", "PlaceDatabase",
           "orb_features", "PoseGraphEdge", "Sim3", "optimize_pose_graph", "LoopEdge", "VerifyConfig",
           "match_places", "triangulate_place", "verify_loop"]
