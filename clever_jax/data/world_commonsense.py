"""The latent commonsense of the synthetic world: static tables, compiled into arrays.

What the world *is*, independent of any image: entity types and sizes, the predicate frames
(which subject and object types each predicate takes, and how commonly), how an interaction may
be worded by an annotator (hypernyms, synonyms, inverses, paraphrases outside the vocabulary),
the scene types, the box geometry of each relation and the pose group that shapes appearance.
`clever_jax.data.world` samples images from it; `build()` also derives the ground-truth
commonsense (graded triplets) written to commonsense.json. docs/world.md tells the story.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clever_jax.data.vocab import benchmark_vocab

# ---------------------------------------------------------------------------------------------
# Entities: the 100 vocabulary entities, then out-of-vocabulary (OOV) ones that images contain
# too. Columns: kind (type, also the appearance prototype group), size (typical box width as a
# fraction of the image width), aspect (height / width), salience (how typical the entity is in
# the triplets it takes part in), part (width relative to the owner when contained in it),
# v (vertical position inside the owner, 0 = top), img_v (vertical position in the image when
# placed on its own, 0 = top, '-' = anywhere).

_ENTITY_TABLE = """
man        person    0.22 2.2  1.0 -    -    -
person     person    0.22 2.2  0.9 -    -    -
woman      person    0.21 2.3  0.9 -    -    -
tree       plant     0.35 1.4  0.9 -    -    0.45
building   structure 0.50 1.0  0.9 -    -    0.3
table      furniture 0.45 0.6  0.8 -    -    0.8
sign       graphic   0.12 0.8  0.8 0.3  0.4  -
boy        person    0.17 2.0  0.7 -    -    -
window     part      0.12 1.0  0.8 0.15 0.4  -
fence      structure 0.55 0.35 0.7 -    -    0.8
pole       structure 0.04 6.0  0.7 -    -    -
girl       person    0.17 2.0  0.7 -    -    -
dog        animal    0.25 0.8  0.7 -    -    0.8
snow       ground    0.90 0.4  0.6 -    -    1.0
car        vehicle   0.35 0.6  0.8 -    -    0.8
bench      furniture 0.30 0.5  0.6 -    -    0.85
street     ground    0.90 0.3  0.8 -    -    1.0
train      vehicle   0.70 0.5  0.7 -    -    0.7
bird       animal    0.10 0.9  0.6 -    -    -
light      part      0.05 1.0  0.7 0.1  0.4  -
head       bodypart  0.08 1.2  0.9 0.35 0.1  -
chair      furniture 0.18 1.3  0.7 -    -    0.85
hand       bodypart  0.04 1.0  0.8 0.18 0.55 -
sidewalk   ground    0.60 0.25 0.7 -    -    1.0
door       part      0.12 1.8  0.7 0.25 0.6  -
bike       vehicle   0.25 0.7  0.6 -    -    0.85
elephant   animal    0.45 0.9  0.6 -    -    0.7
rock       landform  0.15 0.6  0.5 -    -    0.8
horse      animal    0.40 0.9  0.6 -    -    0.75
bus        vehicle   0.55 0.7  0.7 -    -    0.7
glass      tableware 0.05 1.2  0.6 0.3  0.09 -
truck      vehicle   0.45 0.7  0.6 -    -    0.75
bag        object    0.10 1.0  0.6 0.3  0.5  -
box        object    0.12 0.8  0.5 -    -    -
boat       vehicle   0.40 0.5  0.6 -    -    0.7
beach      ground    0.90 0.35 0.6 -    -    1.0
plate      tableware 0.15 0.5  0.7 -    -    -
clock      structure 0.10 1.0  0.6 0.2  0.3  -
leaf       plantpart 0.03 0.8  0.6 0.08 0.4  -
plant      plant     0.15 1.2  0.6 -    -    -
board      board     0.20 0.5  0.5 -    -    -
umbrella   object    0.30 0.6  0.6 -    -    -
giraffe    animal    0.35 1.6  0.6 -    -    0.6
leg        bodypart  0.06 3.0  0.8 0.25 0.75 -
flower     plant     0.05 1.0  0.5 0.1  0.4  -
motorcycle vehicle   0.30 0.7  0.6 -    -    0.8
track      ground    0.60 0.3  0.6 -    -    1.0
cow        animal    0.35 0.8  0.5 -    -    0.75
post       structure 0.05 3.0  0.5 -    -    -
hill       landform  0.80 0.35 0.5 -    -    0.5
zebra      animal    0.35 0.85 0.6 -    -    0.75
surfboard  board     0.25 0.35 0.6 -    -    -
banana     food      0.08 0.5  0.5 -    -    -
shirt      clothing  0.15 1.0  1.0 0.6  0.35 -
shelf      furniture 0.35 0.3  0.5 -    -    -
house      structure 0.45 0.8  0.6 -    -    0.5
face       bodypart  0.06 1.2  0.7 0.25 0.12 -
food       food      0.12 0.6  0.6 -    -    -
wire       structure 0.40 0.15 0.5 -    -    0.15
arm        bodypart  0.05 2.5  0.7 0.18 0.4  -
hair       bodypart  0.07 0.8  0.8 0.35 0.05 -
skateboard board     0.15 0.3  0.6 -    -    -
paper      object    0.10 1.2  0.5 -    -    -
branch     plantpart 0.20 0.4  0.5 0.3  0.4  -
bottle     tableware 0.05 2.5  0.5 -    -    -
handle     part      0.03 0.6  0.4 0.1  0.5  -
sheep      animal    0.25 0.8  0.5 -    -    0.8
roof       part      0.40 0.3  0.6 0.9  0.08 -
bowl       tableware 0.12 0.5  0.5 -    -    -
wheel      part      0.07 1.0  0.7 0.22 0.85 -
book       object    0.07 1.3  0.5 -    -    -
logo       mark      0.05 0.6  0.5 0.2  0.4  -
trunk      plantpart 0.08 3.0  0.5 0.2  0.7  -
cup        tableware 0.06 1.1  0.5 -    -    -
mountain   landform  0.90 0.4  0.6 -    -    0.3
lamp       furniture 0.10 1.5  0.5 -    -    -
seat       part      0.10 0.8  0.5 0.3  0.5  -
shoe       clothing  0.05 0.6  0.7 0.15 0.95 -
wave       landform  0.40 0.3  0.5 -    -    0.8
pillow     furniture 0.15 0.6  0.5 -    -    -
jacket     clothing  0.17 1.1  0.8 0.65 0.35 -
cabinet    furniture 0.35 0.8  0.5 -    -    -
hat        clothing  0.07 0.7  0.7 0.3  0.03 -
tail       bodypart  0.06 1.5  0.6 0.12 0.4  -
letter     mark      0.03 1.2  0.5 0.1  0.5  -
tire       part      0.07 1.0  0.6 0.22 0.85 -
ear        bodypart  0.02 1.4  0.6 0.08 0.1  -
nose       bodypart  0.02 1.0  0.6 0.08 0.12 -
helmet     clothing  0.07 0.8  0.6 0.3  0.04 -
eye        bodypart  0.015 0.6 0.6 0.06 0.09 -
cap        clothing  0.06 0.6  0.6 0.3  0.03 -
coat       clothing  0.18 1.4  0.6 0.7  0.4  -
mouth      bodypart  0.025 0.5 0.5 0.1  0.14 -
glove      clothing  0.04 1.0  0.4 0.15 0.55 -
pant       clothing  0.13 1.8  0.8 0.45 0.7  -
tile       graphic   0.05 1.0  0.4 0.1  0.5  -
neck       bodypart  0.04 0.8  0.6 0.15 0.18 -
jean       clothing  0.13 1.8  0.6 0.45 0.7  -
short      clothing  0.13 0.7  0.6 0.45 0.6  -
wing       bodypart  0.06 0.8  0.4 0.4  0.4  -
sky        sky       0.95 0.4  0.9 -    -    0.0
cloud      sky       0.25 0.5  0.7 -    -    0.1
grass      ground    0.70 0.35 0.9 -    -    1.0
ground     ground    0.80 0.3  0.8 -    -    1.0
water      ground    0.80 0.35 0.8 -    -    0.9
ocean      ground    0.90 0.3  0.6 -    -    0.8
road       ground    0.85 0.3  0.7 -    -    1.0
field      ground    0.85 0.35 0.7 -    -    0.9
sand       ground    0.80 0.3  0.6 -    -    1.0
floor      ground    0.70 0.35 0.7 -    -    1.0
dirt       ground    0.60 0.3  0.6 -    -    1.0
platform   ground    0.50 0.3  0.5 -    -    0.9
wall       structure 0.60 0.8  0.9 -    -    0.3
ceiling    structure 0.70 0.2  0.5 -    -    0.0
counter    furniture 0.50 0.4  0.6 -    -    0.75
bed        furniture 0.50 0.5  0.6 -    -    0.8
couch      furniture 0.45 0.5  0.6 -    -    0.8
railing    structure 0.40 0.3  0.5 -    -    0.7
tower      structure 0.15 3.0  0.5 -    -    0.2
bridge     structure 0.60 0.35 0.5 -    -    0.5
bush       plant     0.20 0.7  0.6 -    -    0.8
shadow     graphic   0.20 0.5  0.7 -    -    0.9
line       graphic   0.30 0.05 0.6 -    -    0.95
stripe     mark      0.05 0.4  0.5 0.2  0.5  -
spot       mark      0.03 1.0  0.5 0.1  0.5  -
number     mark      0.04 1.2  0.5 0.15 0.5  -
word       mark      0.08 0.4  0.5 0.25 0.5  -
picture    graphic   0.15 0.8  0.6 -    -    0.3
mirror     part      0.06 1.0  0.5 0.12 0.3  -
kite       object    0.10 1.0  0.7 -    -    0.15
frisbee    object    0.06 0.5  0.7 -    -    -
ball       object    0.04 1.0  0.7 -    -    -
phone      object    0.03 1.6  0.7 -    -    -
racket     object    0.06 1.5  0.7 -    -    -
bat        object    0.03 4.0  0.6 -    -    -
knife      object    0.03 3.0  0.5 -    -    -
laptop     object    0.15 0.7  0.6 -    -    -
vase       object    0.06 1.5  0.5 -    -    -
cake       food      0.12 0.7  0.6 -    -    -
pizza      food      0.20 0.5  0.7 -    -    -
hay        food      0.12 0.6  0.5 -    -    0.9
cart       vehicle   0.30 0.6  0.5 -    -    0.8
plane      vehicle   0.40 0.4  0.7 -    -    0.3
jersey     clothing  0.15 1.0  0.6 0.6  0.35 -
t-shirt    clothing  0.15 1.0  0.7 0.6  0.35 -
collar     clothing  0.05 0.5  0.5 0.2  0.3  -
saddle     clothing  0.12 0.6  0.5 0.3  0.3  -
wood       material  0.20 0.6  0.5 0.6  0.5  -
metal      material  0.15 0.6  0.4 0.6  0.5  -
brick      material  0.20 0.6  0.5 0.6  0.5  -
stone      material  0.20 0.6  0.4 0.6  0.5  -
plastic    material  0.08 0.6  0.3 0.6  0.5  -
"""

# ---------------------------------------------------------------------------------------------
# Entity groups used by the frames.

PEOPLE = ("man", "person", "woman", "boy", "girl")
KIDS = ("boy", "girl")
ANIMALS = ("dog", "bird", "elephant", "horse", "giraffe", "cow", "zebra", "sheep")
QUADRUPEDS = ("dog", "elephant", "horse", "giraffe", "cow", "zebra", "sheep")
GRAZERS = ("elephant", "horse", "giraffe", "cow", "zebra", "sheep")
ROAD_VEHICLES = ("car", "bus", "truck", "motorcycle", "bike")
VEHICLES = (*ROAD_VEHICLES, "train", "boat")
BOARDS = ("skateboard", "surfboard", "board")
CLOTHES = ("shirt", "jacket", "coat", "pant", "jean", "short", "hat", "cap", "helmet", "glove", "shoe", "glass")
BODY = ("head", "hand", "arm", "leg", "face", "hair", "ear", "nose", "eye", "mouth", "neck")
ANIMAL_BODY = ("head", "leg", "ear", "eye", "nose", "mouth", "neck", "tail", "face")
BUILDINGS = ("building", "house")
TABLEWARE = ("plate", "bowl", "cup", "glass", "bottle")
FOOD = ("food", "banana")
GRAPHICS = ("letter", "logo", "word", "number")
SURFACES_WITH_PRINT = (
    "shirt", "jacket", "cap", "hat", "board", "surfboard", "skateboard", "box", "bag", "cup", "bottle",
)
WRITABLE = ("sign", "train", "bus", "truck", "car", "boat", "plane", "building", "wall", "paper", "book")

# ---------------------------------------------------------------------------------------------
# Latent predicates: the interactions scenes actually contain. Columns: sampling mass (relative
# frequency of the predicate among interactions, long-tailed), geometry class, pose group,
# rendering table (defaults to the predicate's own). Predicates of the vocabulary that are not
# here ("of", "wears", "worn by", "held by", ...) exist only as wordings of latent ones.

_LATENT = {
    "has": (0.13, "contain", "part"),
    "wearing": (0.06, "contain", "wear"),
    "on": (0.16, "on_top", "on"),
    "in": (0.08, "inside", "in"),
    "near": (0.05, "near", "near"),
    "standing on": (0.035, "on_top", "stand"),
    "holding": (0.035, "hold", "hold"),
    "sitting on": (0.03, "sit", "sit"),
    "behind": (0.025, "behind", "behind"),
    "in front of": (0.015, "front", "front"),
    "above": (0.015, "above", "above"),
    "riding": (0.012, "ride", "ride"),
    "under": (0.012, "under", "under"),
    "with": (0.008, "contain", "contain"),
    "parked on": (0.008, "on_top", "park"),
    "walking on": (0.006, "on_top", "walk"),
    "attached to": (0.006, "attach", "attach"),
    "hanging from": (0.005, "hang", "hang"),
    "looking at": (0.005, "look", "look"),
    "over": (0.004, "above", "above"),
    "standing next to": (0.004, "near", "stand"),
    "carrying": (0.004, "hold", "carry"),
    "laying on": (0.004, "lie", "lie"),
    "covering": (0.003, "cover", "cover"),
    "at": (0.003, "touch", "at"),
    "for": (0.0025, "attach", "other"),
    "eating": (0.0025, "eat", "eat"),
    "touching": (0.002, "touch", "touch"),
    "watching": (0.002, "look", "look"),
    "between": (0.0015, "near", "near"),
    "standing behind": (0.0015, "behind", "stand"),
    "standing near": (0.0015, "near", "stand"),
    "leaning on": (0.0015, "touch", "lean"),
    "mounted on": (0.0015, "attach", "attach"),
    "along": (0.0012, "along", "along"),
    "standing by": (0.001, "near", "stand"),
    "on back of": (0.001, "ride", "ride"),
    "from": (0.001, "attach", "other"),
    "against": (0.001, "touch", "lean"),
    "to": (0.001, "inside", "part"),
    "outside": (0.001, "near", "near"),
    "resting on": (0.001, "lie", "lie"),
    "across": (0.0008, "across", "cross"),
    "in middle of": (0.0008, "inside_mid", "in"),
    "painted on": (0.0008, "inside", "surface"),
    "connected to": (0.0007, "attach", "attach"),
    "holding up": (0.0007, "hold_up", "hold"),
    "using": (0.0007, "hold", "hold"),
    "surrounding": (0.0007, "surround", "surround"),
    "walking": (0.0006, "near", "walk"),
    "growing on": (0.0006, "inside", "grow"),
    "crossing": (0.0006, "across", "cross"),
    "walking in": (0.0006, "inside_low", "walk"),
    "made of": (0.0005, "contain", "other"),
    "supporting": (0.0005, "under", "support"),
    "full of": (0.0005, "contain", "contain"),
    "pulling": (0.0005, "touch", "pull"),
    "lining": (0.0004, "along", "along"),
    "playing with": (0.0004, "touch", "play"),
    "printed on": (0.0004, "inside", "surface"),
    "filled with": (0.0004, "contain", "contain"),
    "walking down": (0.0004, "on_top", "walk"),
    "on bottom of": (0.0003, "inside_low", "part"),
    "laying in": (0.0003, "inside_low", "lie"),
    "cutting": (0.0003, "hold", "eat"),
    "contains": (0.0003, "contain", "contain"),
    "sitting at": (0.0003, "touch", "sit"),
    "hitting": (0.0003, "touch", "play"),
    "built into": (0.0003, "inside", "part"),
    "shows": (0.0003, "contain", "surface"),
    "parked in": (0.0003, "inside_low", "park"),
    "written on": (0.0003, "inside", "surface"),
    "says": (0.0003, "contain", "surface"),
    "driving on": (0.0003, "on_top", "drive"),
    "playing": (0.0002, "near", "play"),
    "adorning": (0.0002, "inside", "surface"),
    "growing in": (0.0002, "inside_low", "grow"),
    "hanging in": (0.0002, "inside", "hang"),
    "swinging": (0.0002, "hold_up", "play"),
    "flying": (0.0002, "above", "fly"),
    "throwing": (0.0002, "hold_up", "play"),
    "floating in": (0.0002, "inside", "float"),
}

# ---------------------------------------------------------------------------------------------
# Renderings: how an annotator words a latent interaction (s, p, o): (surface predicate,
# inverse, weight). Inverse wordings swap subject and object ("shirt worn by man"). Weights are
# relative; the first entry is the latent predicate itself. Surface predicates outside the
# vocabulary ("next to", "inside", ...) are real annotations that ingestion cannot use.

_RENDER = {
    "has": (("has", 0, 0.55), ("of", 1, 0.27), ("on", 1, 0.07), ("with", 0, 0.04), ("part of", 1, 0.03),
            ("belonging to", 1, 0.01), ("have", 0, 0.03)),
    "wearing": (("wearing", 0, 0.55), ("wears", 0, 0.08), ("has on", 0, 0.03), ("in", 0, 0.05), ("has", 0, 0.06),
                ("with", 0, 0.03), ("on", 1, 0.09), ("worn by", 1, 0.04), ("of", 1, 0.02), ("is wearing", 0, 0.05)),
    "on": (("on", 0, 0.84), ("sitting on", 0, 0.04), ("resting on", 0, 0.02), ("on top of", 0, 0.05),
           ("under", 1, 0.02), ("above", 0, 0.01), ("in", 0, 0.02)),
    "in": (("in", 0, 0.84), ("inside", 0, 0.06), ("on", 0, 0.04), ("with", 1, 0.03), ("in middle of", 0, 0.03)),
    "near": (("near", 0, 0.68), ("next", 0, 0.06), ("next to", 0, 0.15), ("by", 0, 0.05), ("beside", 0, 0.03),
             ("behind", 0, 0.03)),
    "standing on": (("standing on", 0, 0.5), ("on", 0, 0.4), ("standing", 0, 0.03), ("standing in", 0, 0.04),
                    ("walking on", 0, 0.03)),
    "holding": (("holding", 0, 0.72), ("held by", 1, 0.06), ("with", 0, 0.07), ("has", 0, 0.04), ("holds", 0, 0.07),
                ("carrying", 0, 0.04)),
    "sitting on": (("sitting on", 0, 0.5), ("on", 0, 0.38), ("sitting", 0, 0.03), ("sitting on top of", 0, 0.03),
                   ("sitting in", 0, 0.04), ("at", 0, 0.02)),
    "behind": (("behind", 0, 0.86), ("in back of", 0, 0.05), ("in front of", 1, 0.06), ("near", 0, 0.03)),
    "in front of": (("in front of", 0, 0.85), ("behind", 1, 0.08), ("near", 0, 0.04), ("before", 0, 0.03)),
    "above": (("above", 0, 0.75), ("over", 0, 0.12), ("under", 1, 0.05), ("on", 0, 0.03), ("on top of", 0, 0.05)),
    "riding": (("riding", 0, 0.58), ("on", 0, 0.2), ("riding on", 0, 0.1), ("sitting on", 0, 0.05),
               ("on back of", 0, 0.03), ("rides", 0, 0.04)),
    "under": (("under", 0, 0.6), ("underneath", 0, 0.1), ("beneath", 0, 0.08), ("below", 0, 0.08),
              ("above", 1, 0.06), ("over", 1, 0.04), ("on bottom of", 0, 0.04)),
    "with": (("with", 0, 0.6), ("has", 0, 0.15), ("on", 1, 0.15), ("of", 1, 0.05), ("containing", 0, 0.05)),
    "parked on": (("parked on", 0, 0.45), ("on", 0, 0.43), ("parked in", 0, 0.05), ("in", 0, 0.05),
                  ("parked", 0, 0.02)),
    "walking on": (("walking on", 0, 0.45), ("on", 0, 0.33), ("walking", 0, 0.04), ("walking down", 0, 0.06),
                   ("walking in", 0, 0.05), ("walking along", 0, 0.04), ("crossing", 0, 0.03)),
    "attached to": (("attached to", 0, 0.55), ("on", 0, 0.3), ("mounted on", 0, 0.05), ("connected to", 0, 0.05),
                    ("hanging from", 0, 0.05)),
    "hanging from": (("hanging from", 0, 0.5), ("on", 0, 0.25), ("hanging on", 0, 0.1), ("attached to", 0, 0.07),
                     ("hanging in", 0, 0.03), ("hanging off", 0, 0.05)),
    "looking at": (("looking at", 0, 0.7), ("watching", 0, 0.15), ("looking", 0, 0.05), ("near", 0, 0.05),
                   ("staring at", 0, 0.05)),
    "over": (("over", 0, 0.6), ("above", 0, 0.3), ("across", 0, 0.05), ("on", 0, 0.05)),
    "standing next to": (("standing next to", 0, 0.45), ("near", 0, 0.22), ("next", 0, 0.05), ("next to", 0, 0.15),
                         ("standing by", 0, 0.04), ("standing near", 0, 0.04), ("beside", 0, 0.05)),
    "carrying": (("carrying", 0, 0.6), ("holding", 0, 0.25), ("with", 0, 0.05), ("has", 0, 0.04),
                 ("carries", 0, 0.06)),
    "laying on": (("laying on", 0, 0.45), ("lying on", 0, 0.2), ("on", 0, 0.25), ("lying on top of", 0, 0.04),
                  ("resting on", 0, 0.03), ("laying in", 0, 0.03)),
    "covering": (("covering", 0, 0.45), ("on", 0, 0.3), ("covered in", 1, 0.12), ("covered with", 1, 0.08),
                 ("over", 0, 0.05)),
    "at": (("at", 0, 0.6), ("near", 0, 0.2), ("in front of", 0, 0.1), ("by", 0, 0.1)),
    "for": (("for", 0, 0.6), ("on", 0, 0.2), ("near", 0, 0.1), ("of", 0, 0.1)),
    "eating": (("eating", 0, 0.85), ("with", 0, 0.05), ("eats", 0, 0.05), ("holding", 0, 0.05)),
    "touching": (("touching", 0, 0.6), ("on", 0, 0.2), ("near", 0, 0.1), ("against", 0, 0.1)),
    "watching": (("watching", 0, 0.65), ("looking at", 0, 0.3), ("near", 0, 0.05)),
    "between": (("between", 0, 0.6), ("near", 0, 0.3), ("next to", 0, 0.1)),
    "standing behind": (("standing behind", 0, 0.55), ("behind", 0, 0.4), ("standing near", 0, 0.05)),
    "standing near": (("standing near", 0, 0.5), ("near", 0, 0.35), ("standing next to", 0, 0.1),
                      ("standing by", 0, 0.05)),
    "leaning on": (("leaning on", 0, 0.5), ("against", 0, 0.25), ("on", 0, 0.15), ("leaning against", 0, 0.1)),
    "mounted on": (("mounted on", 0, 0.5), ("on", 0, 0.35), ("attached to", 0, 0.15)),
    "along": (("along", 0, 0.55), ("near", 0, 0.2), ("next", 0, 0.05), ("lining", 0, 0.1), ("on", 0, 0.1)),
    "standing by": (("standing by", 0, 0.5), ("near", 0, 0.3), ("standing next to", 0, 0.1), ("next to", 0, 0.1)),
    "on back of": (("on back of", 0, 0.55), ("on", 0, 0.45)),
    "from": (("from", 0, 0.6), ("on", 0, 0.2), ("of", 0, 0.2)),
    "against": (("against", 0, 0.5), ("leaning on", 0, 0.25), ("on", 0, 0.15), ("near", 0, 0.1)),
    "to": (("to", 0, 0.6), ("of", 0, 0.3), ("on", 0, 0.1)),
    "outside": (("outside", 0, 0.5), ("near", 0, 0.3), ("in front of", 0, 0.2)),
    "resting on": (("resting on", 0, 0.5), ("on", 0, 0.4), ("laying on", 0, 0.05), ("sitting on", 0, 0.05)),
    "across": (("across", 0, 0.6), ("over", 0, 0.2), ("on", 0, 0.2)),
    "in middle of": (("in middle of", 0, 0.5), ("in", 0, 0.35), ("on", 0, 0.15)),
    "painted on": (("painted on", 0, 0.5), ("on", 0, 0.4), ("printed on", 0, 0.05), ("written on", 0, 0.05)),
    "connected to": (("connected to", 0, 0.6), ("attached to", 0, 0.25), ("on", 0, 0.15)),
    "holding up": (("holding up", 0, 0.5), ("holding", 0, 0.4), ("supporting", 0, 0.05), ("with", 0, 0.05)),
    "using": (("using", 0, 0.6), ("holding", 0, 0.25), ("with", 0, 0.1), ("on", 0, 0.05)),
    "surrounding": (("surrounding", 0, 0.6), ("around", 0, 0.2), ("near", 0, 0.1), ("on", 0, 0.1)),
    "walking": (("walking", 0, 0.7), ("with", 0, 0.2), ("near", 0, 0.1)),
    "growing on": (("growing on", 0, 0.5), ("on", 0, 0.4), ("growing in", 0, 0.05), ("in", 0, 0.05)),
    "crossing": (("crossing", 0, 0.6), ("on", 0, 0.15), ("walking on", 0, 0.1), ("in", 0, 0.1), ("across", 0, 0.05)),
    "walking in": (("walking in", 0, 0.5), ("in", 0, 0.3), ("walking on", 0, 0.1), ("walking", 0, 0.05),
                   ("standing in", 0, 0.05)),
    "made of": (("made of", 0, 0.7), ("of", 0, 0.2), ("with", 0, 0.1)),
    "supporting": (("supporting", 0, 0.55), ("holding up", 0, 0.15), ("under", 0, 0.1), ("on", 1, 0.2)),
    "full of": (("full of", 0, 0.5), ("filled with", 0, 0.25), ("with", 0, 0.1), ("contains", 0, 0.05),
                ("in", 1, 0.1)),
    "pulling": (("pulling", 0, 0.7), ("with", 0, 0.1), ("near", 0, 0.1), ("in front of", 0, 0.1)),
    "lining": (("lining", 0, 0.5), ("along", 0, 0.3), ("near", 0, 0.1), ("on", 0, 0.1)),
    "playing with": (("playing with", 0, 0.6), ("with", 0, 0.2), ("holding", 0, 0.1), ("near", 0, 0.1)),
    "printed on": (("printed on", 0, 0.5), ("on", 0, 0.4), ("painted on", 0, 0.05), ("written on", 0, 0.05)),
    "filled with": (("filled with", 0, 0.5), ("full of", 0, 0.25), ("with", 0, 0.1), ("in", 1, 0.1),
                    ("contains", 0, 0.05)),
    "walking down": (("walking down", 0, 0.5), ("walking on", 0, 0.25), ("on", 0, 0.15), ("walking", 0, 0.05),
                     ("walking in", 0, 0.05)),
    "on bottom of": (("on bottom of", 0, 0.5), ("on", 0, 0.3), ("of", 0, 0.2)),
    "laying in": (("laying in", 0, 0.5), ("in", 0, 0.3), ("laying on", 0, 0.1), ("lying on", 0, 0.05),
                  ("on", 0, 0.05)),
    "cutting": (("cutting", 0, 0.7), ("holding", 0, 0.2), ("with", 0, 0.1)),
    "contains": (("contains", 0, 0.55), ("with", 0, 0.15), ("in", 1, 0.2), ("full of", 0, 0.1)),
    "sitting at": (("sitting at", 0, 0.5), ("at", 0, 0.3), ("near", 0, 0.1), ("in front of", 0, 0.1)),
    "hitting": (("hitting", 0, 0.7), ("touching", 0, 0.1), ("on", 0, 0.1), ("near", 0, 0.1)),
    "built into": (("built into", 0, 0.5), ("in", 0, 0.3), ("on", 0, 0.1), ("part of", 0, 0.1)),
    "shows": (("shows", 0, 0.6), ("has", 0, 0.2), ("with", 0, 0.1), ("on", 1, 0.1)),
    "parked in": (("parked in", 0, 0.5), ("in", 0, 0.35), ("parked on", 0, 0.1), ("on", 0, 0.05)),
    "written on": (("written on", 0, 0.5), ("on", 0, 0.4), ("printed on", 0, 0.05), ("says", 1, 0.05)),
    "says": (("says", 0, 0.6), ("has", 0, 0.2), ("shows", 0, 0.1), ("written on", 1, 0.1)),
    "driving on": (("driving on", 0, 0.5), ("on", 0, 0.35), ("driving down", 0, 0.1), ("in", 0, 0.05)),
    "playing": (("playing", 0, 0.7), ("on", 0, 0.1), ("in", 0, 0.1), ("near", 0, 0.1)),
    "adorning": (("adorning", 0, 0.5), ("on", 0, 0.4), ("decorating", 0, 0.1)),
    "growing in": (("growing in", 0, 0.5), ("in", 0, 0.4), ("growing on", 0, 0.05), ("on", 0, 0.05)),
    "hanging in": (("hanging in", 0, 0.5), ("in", 0, 0.3), ("hanging from", 0, 0.1), ("on", 0, 0.1)),
    "swinging": (("swinging", 0, 0.7), ("holding", 0, 0.3)),
    "flying": (("flying", 0, 0.5), ("above", 0, 0.2), ("over", 0, 0.2), ("in", 0, 0.1)),
    "throwing": (("throwing", 0, 0.7), ("holding", 0, 0.2), ("with", 0, 0.1)),
    "floating in": (("floating in", 0, 0.55), ("in", 0, 0.35), ("on", 0, 0.1)),
}

# ---------------------------------------------------------------------------------------------
# Frames: (predicate, subjects, objects, weight[, geometry override]). The commonness of a
# triplet is its frame weight times the geometric mean of the two entities' salience, with a
# little per-triplet jitter; where several frames cover a triplet the largest wins.


def _frames() -> list[tuple]:
    P, K = PEOPLE, KIDS
    f = []

    def add(pred, subjects, objects, weight, geometry=None):
        subjects = (subjects,) if isinstance(subjects, str) else subjects
        objects = (objects,) if isinstance(objects, str) else objects
        f.append((pred, subjects, objects, weight, geometry))

    # Wholes and their parts.
    add("has", P, BODY, 1.0)
    add("has", QUADRUPEDS, ANIMAL_BODY, 0.8)
    add("has", "bird", ("head", "wing", "tail", "eye", "leg"), 0.8)
    add("has", "elephant", "trunk", 1.0)
    add("has", ("giraffe", "horse"), ("neck", "hair"), 0.6)
    add("has", "zebra", "stripe", 0.9)
    add("has", "giraffe", "spot", 0.8)
    add("has", "head", ("hair", "face", "ear", "eye", "nose", "mouth"), 0.6)
    add("has", "face", ("eye", "nose", "mouth"), 0.7)
    add("has", "arm", "hand", 0.35)
    add("has", ("car", "truck", "bus"), ("wheel", "tire", "window", "door", "light", "logo", "roof", "mirror"), 0.8)
    add("has", ("car", "truck"), ("handle", "seat"), 0.4)
    add("has", ("bus", "train", "truck"), ("letter", "sign", "number", "word"), 0.5)
    add("has", "train", ("window", "door", "light", "logo", "roof", "wheel"), 0.8)
    add("has", ("motorcycle", "bike"), ("wheel", "tire", "seat", "handle", "light"), 0.8)
    add("has", "motorcycle", ("logo", "mirror"), 0.4)
    add("has", ("boat", "plane"), ("window", "logo", "letter", "light", "number"), 0.5)
    add("has", "plane", ("wing", "tail", "wheel"), 0.8)
    add("has", BUILDINGS, ("window", "door", "roof", "sign", "clock", "light", "logo", "letter"), 0.9)
    add("has", ("tree",), ("leaf", "branch", "trunk"), 1.0)
    add("has", "branch", "leaf", 0.7)
    add("has", ("plant", "bush"), ("leaf", "flower"), 0.8)
    add("has", "sign", ("letter", "logo", "word", "number"), 0.6)
    add("has", "clock", ("hand", "number"), 0.4)
    add("has", ("table", "chair", "bench"), "leg", 0.45)
    add("has", "cabinet", ("door", "handle", "shelf"), 0.5)
    add("has", ("door",), ("handle", "window"), 0.5)
    add("has", ("shirt", "cap", "hat", "jacket"), ("logo", "letter"), 0.35)
    add("has", BOARDS, ("logo", "letter"), 0.35)
    add("has", "skateboard", "wheel", 0.7)
    add("has", ("bag", "cup"), "handle", 0.3)
    add("has", ("mountain", "hill"), ("snow", "tree"), 0.35)
    add("has", "roof", "tile", 0.3)
    add("has", ("wall", "floor"), "tile", 0.4)
    add("has", "wall", ("window", "picture", "sign", "clock"), 0.5)
    add("has", "sky", "cloud", 0.6)
    add("has", ("street", "road"), "line", 0.4)
    add("has", "window", "glass", 0.25)

    # Clothing.
    add("wearing", P, CLOTHES, 1.0)
    add("wearing", P, ("jersey", "t-shirt"), 0.6)
    add("wearing", "dog", "collar", 0.8)
    add("wearing", "dog", ("hat", "shirt", "glass", "helmet"), 0.06)
    add("wearing", "horse", "saddle", 0.5)
    add("wearing", ("horse", "elephant"), "hat", 0.03)

    # Generic support.
    add("on", (*TABLEWARE, *FOOD, "book", "paper", "box", "bag", "lamp", "flower", "plant", "laptop", "pizza",
               "cake", "vase", "knife", "phone"), ("table", "counter", "shelf"), 0.8)
    add("on", (*FOOD, "pizza", "cake", "knife"), ("plate", "bowl"), 0.9)
    add("on", ("book", "box", "plant", "flower", "vase", "lamp", "clock", "bottle"), ("shelf", "cabinet"), 0.6)
    add("on", "pillow", ("bed", "couch", "chair", "bench"), 0.6)
    add("on", ("hat", "cap", "helmet", "hair"), "head", 0.7)
    add("on", "glass", "face", 0.6, "inside")
    add("on", "glove", "hand", 0.6, "inside")
    add("on", "snow", ("mountain", "hill", "tree", "roof", "ground", "street", "rock", "car", "branch", "bench"), 0.7,
        "inside")
    add("on", "leaf", ("tree", "branch", "ground", "plant", "grass"), 0.6, "inside")
    add("on", "bird", ("branch", "pole", "roof", "fence", "wire", "post", "sign", "rock", "tree", "building", "boat",
                       "beach"), 0.6)
    add("on", ("sign", "clock", "light", "logo", "letter", "picture", "number", "window"),
        ("building", "pole", "wall", "post", "bus", "train", "truck", "house", "door"), 0.65, "inside")
    add("on", ("logo", "letter", "word", "number", "stripe"), SURFACES_WITH_PRINT, 0.55, "inside")
    add("on", ("tile",), ("roof", "floor", "wall"), 0.5, "inside")
    add("on", "boat", ("beach", "water", "sand", "wave"), 0.5)
    add("on", "train", "track", 1.0)
    add("on", ROAD_VEHICLES, ("street", "road"), 0.8)
    add("on", P, "phone", 0.4, "hold")
    add("on", ("umbrella", "bag"), ("beach", "bench", "chair", "ground"), 0.3)
    add("on", "shadow", ("ground", "street", "grass", "snow", "wall", "sidewalk", "beach", "road"), 0.6, "inside")
    add("on", "line", ("street", "road", "track", "sidewalk"), 0.6, "inside")
    add("on", "wire", ("pole", "post"), 0.3, "attach")
    add("on", "food", "table", 0.5)
    add("on", "bag", ("man", "woman", "person"), 0.35, "inside")
    add("on", ("cloud",), ("sky",), 0.3, "inside")
    add("on", "kite", "sky", 0.2, "inside")

    # Containment.
    add("in", P, ("car", "bus", "train", "truck", "boat"), 0.45, "inside")
    add("in", P, ("water", "ocean", "snow", "field", "grass"), 0.5, "inside_low")
    add("in", (*FOOD, "pizza"), ("bowl", "box", "plate", "bag"), 0.65)
    add("in", ("flower", "plant"), ("vase", "field", "grass"), 0.5)
    add("in", "bird", ("tree", "sky", "water"), 0.6)
    add("in", ("cloud", "kite", "plane"), "sky", 1.0)
    add("in", "boat", ("water", "ocean"), 1.0, "inside_low")
    add("in", "tree", ("field", "grass", "snow"), 0.3, "inside_low")
    add("in", ANIMALS, ("field", "grass", "water", "snow", "dirt"), 0.55, "inside_low")
    add("in", ROAD_VEHICLES, ("street", "road"), 0.4, "inside_low")
    add("in", "book", "shelf", 0.5)
    add("in", "window", ("building", "wall", "door", "house"), 0.4)
    add("in", "sign", "window", 0.3)
    add("in", ("cup", "banana", "phone", "umbrella", "bag", "glass", "racket", "bat", "frisbee", "ball"), "hand", 0.3,
        "contain")
    add("in", "wave", ("water", "ocean"), 0.7)
    add("in", "rock", ("water", "field", "sand", "snow"), 0.4, "inside_low")
    add("in", "dog", ("car", "water", "snow", "grass", "boat", "bed"), 0.3)
    add("in", "light", ("window", "ceiling"), 0.2)

    add("with", ("plate", "bowl"), (*FOOD, "pizza", "cake"), 0.6)
    add("with", "table", ("plate", "food", "umbrella", "bowl"), 0.3)
    add("with", P, ("dog", "umbrella", "bag", "surfboard", "kite"), 0.4, "near")
    add("with", ("man", "woman"), ("boy", "girl"), 0.2, "near")

    # People and animals on things, by posture.
    add("standing on", P, ("sidewalk", "street", "snow", "beach", "skateboard", "grass", "sand", "platform", "ground",
                           "field"), 0.8)
    add("standing on", P, ("surfboard", "board", "rock", "floor", "dirt", "road", "track"), 0.5)
    add("standing on", P, ("bench", "chair", "table", "boat", "wave"), 0.1)
    add("standing on", QUADRUPEDS, ("grass", "field", "dirt", "street", "snow", "beach", "sand", "rock", "ground",
                                    "road"), 0.6)
    add("standing on", "bird", ("beach", "sand", "rock", "branch", "pole", "fence", "post", "roof", "wire", "boat"),
        0.5)
    add("standing on", "dog", ("surfboard", "skateboard", "bench", "chair", "boat"), 0.12)
    add("sitting on", P, ("bench", "chair", "couch", "bed"), 1.0)
    add("sitting on", P, ("motorcycle", "bike", "horse", "rock", "beach", "grass", "ground", "surfboard", "board",
                          "sand", "floor", "wall", "seat"), 0.5)
    add("sitting on", P, ("elephant", "table", "pillow", "snow", "skateboard", "sidewalk", "counter", "boat"), 0.2)
    add("sitting on", "bird", ("branch", "pole", "wire", "fence", "roof", "sign", "post", "rock", "boat", "bench"), 0.6)
    add("sitting on", "dog", ("bench", "chair", "grass", "ground", "floor", "bed", "beach", "seat", "couch",
                              "pillow"), 0.5)
    add("sitting on", "dog", ("skateboard", "surfboard", "motorcycle"), 0.06)
    add("sitting on", "boat", ("beach", "water", "sand"), 0.3)
    add("sitting on", ("pillow", "bag", "box"), ("chair", "bench", "bed", "couch"), 0.2)
    add("laying on", P, ("beach", "bed", "bench", "grass", "sand", "snow", "couch", "ground", "surfboard", "board"),
        0.6)
    add("laying on", "dog", ("bed", "grass", "ground", "floor", "couch", "bench", "pillow", "beach", "sand", "chair",
                             "street", "sidewalk"), 0.6)
    add("laying on", GRAZERS, ("grass", "ground", "dirt", "field"), 0.3)
    add("laying on", ("book", "paper", "banana", "pillow", "food", "bag", "umbrella", "phone"),
        ("table", "bed", "ground", "bench", "chair", "floor", "couch"), 0.3)
    add("laying on", (*BOARDS, "bike"), ("beach", "sand", "ground", "grass", "street"), 0.3)
    add("resting on", ("hand", "arm", "head"), ("table", "pillow", "chair", "bench"), 0.3)
    add("resting on", (*FOOD, "knife"), "plate", 0.25)
    add("resting on", "boat", ("beach", "sand"), 0.2)
    add("resting on", ("bike", "board", "surfboard"), ("fence", "wall", "tree", "pole"), 0.2)
    add("resting on", "glass", ("face", "head"), 0.1, "inside")
    add("riding", P, ("horse", "motorcycle", "bike", "skateboard"), 1.0)
    add("riding", P, ("surfboard", "wave"), 0.8)
    add("riding", P, ("board", "boat"), 0.4)
    add("riding", P, "elephant", 0.35)
    add("riding", P, ("bus", "train"), 0.15, "inside")
    add("riding", P, "cow", 0.04)
    add("riding", "dog", ("skateboard", "surfboard"), 0.1)
    add("riding", "dog", ("motorcycle", "bike", "boat"), 0.03)
    add("on back of", P, ("horse", "elephant", "motorcycle", "bike"), 0.5)
    add("on back of", ("bag", "saddle"), (*P, "horse"), 0.5, "inside")
    add("on back of", "seat", ("bike", "motorcycle"), 0.3, "inside")
    add("on back of", ("logo", "letter", "number"), ("shirt", "jacket", "bus", "truck", "jersey"), 0.3, "inside")
    add("walking on", P, ("street", "sidewalk", "beach", "snow", "grass", "sand", "road", "dirt", "field", "floor"),
        0.8)
    add("walking on", P, ("track", "platform", "bridge"), 0.3)
    add("walking on", QUADRUPEDS, ("grass", "dirt", "street", "road", "beach", "sand", "snow", "field"), 0.6)
    add("walking on", "bird", ("beach", "sand", "grass"), 0.4)
    add("walking down", P, ("street", "sidewalk", "road", "hill", "beach", "track"), 0.6)
    add("walking down", QUADRUPEDS, ("street", "road", "hill", "dirt"), 0.3)
    add("walking in", P, ("snow", "grass", "water", "field", "street", "sand", "beach"), 0.5)
    add("walking in", QUADRUPEDS, ("field", "grass", "water", "snow", "dirt"), 0.5)
    add("walking", P, "dog", 1.0)
    add("walking", P, ("horse", "bike"), 0.3)
    add("walking", P, ("cow", "sheep"), 0.05)
    add("laying in", P, ("bed", "grass", "snow", "sand", "water", "field"), 0.4)
    add("laying in", "dog", ("bed", "grass", "snow", "sand", "dirt"), 0.4)
    add("laying in", GRAZERS, ("grass", "field", "dirt", "hay"), 0.3)
    add("laying in", (*FOOD, "book", "paper"), ("bowl", "box", "bag"), 0.15)
    add("crossing", P, ("street", "road"), 1.0)
    add("crossing", P, ("track", "bridge", "water", "snow"), 0.3)
    add("crossing", ANIMALS, ("street", "road", "water"), 0.3)
    add("crossing", (*VEHICLES,), ("bridge", "street", "track"), 0.25)
    add("sitting at", P, ("table", "counter"), 1.0)
    add("sitting at", P, ("bench", "laptop"), 0.3)
    add("sitting at", "dog", "table", 0.05)
    add("at", P, ("table", "beach", "counter", "platform", "window"), 0.5)
    add("at", ("boat", "train", "bus"), ("beach", "platform"), 0.2)
    add("at", "dog", ("beach", "table"), 0.1)

    # Vehicles.
    add("parked on", ROAD_VEHICLES, ("street", "sidewalk", "road"), 0.8)
    add("parked on", ROAD_VEHICLES, ("grass", "dirt", "snow", "beach"), 0.25)
    add("parked on", "boat", ("beach", "sand"), 0.2)
    add("parked on", "train", "track", 0.3)
    add("parked in", ROAD_VEHICLES, ("street", "road", "field", "snow", "grass"), 0.5)
    add("parked in", "boat", ("water", "ocean"), 0.3)
    add("driving on", ROAD_VEHICLES, ("street", "road", "bridge"), 0.7)
    add("driving on", ROAD_VEHICLES, ("snow", "dirt", "beach", "sidewalk", "grass"), 0.2)
    add("driving on", "train", "track", 0.3)
    add("pulling", ("horse", "cow", "elephant"), ("cart", "person", "man", "boat"), 0.4)
    add("pulling", "dog", (*P, "skateboard"), 0.15)
    add("pulling", ("truck", "car"), ("boat", "car", "cart"), 0.3)
    add("pulling", P, ("bag", "cart", "boat", "surfboard", "kite", "dog"), 0.3)
    add("pulling", "train", "train", 0.2)

    # Hands.
    add("holding", P, ("umbrella", "phone", "racket", "bat", "kite"), 1.0)
    add("holding", P, ("surfboard", "skateboard", "frisbee", "cup", "glass", "bag"), 0.6)
    add("holding", P, ("bottle", "book", "paper", "banana", "box", "plate", "board", "food", "ball", "knife", "sign"),
        0.4)
    add("holding", P, ("bowl", "pizza", "laptop", "dog", "flower"), 0.2)
    add("holding", ("man", "woman", "person"), ("boy", "girl"), 0.1)
    add("holding", "hand", ("cup", "glass", "bottle", "phone", "banana", "umbrella", "bag", "paper", "book", "racket",
                            "bat", "knife", "food", "frisbee", "ball"), 0.45)
    add("holding", ("dog", "bird"), ("frisbee", "ball", "food"), 0.2, "eat")
    add("holding", ("pole", "post"), ("sign", "light", "wire"), 0.15, "attach")
    add("carrying", P, ("bag", "umbrella", "surfboard", "skateboard", "board", "box", "kite"), 0.6)
    add("carrying", P, ("paper", "book", "food", "plate", "dog", "boy", "girl"), 0.15)
    add("carrying", ("elephant", "horse"), P, 0.15, "ride")
    add("carrying", ("truck", "train", "boat"), ("box", "car", "person"), 0.2, "inside")
    add("holding up", P, ("umbrella", "sign", "phone", "paper", "glass", "banana", "book", "cup", "racket", "kite"),
        0.4)
    add("holding up", ("pole", "post"), ("sign", "wire", "light", "roof", "umbrella"), 0.3, "under")
    add("using", P, ("phone", "laptop", "umbrella", "knife"), 0.45)
    add("using", P, ("board", "skateboard", "racket", "bat", "surfboard"), 0.2)
    add("eating", P, ("food", "pizza", "cake"), 1.0)
    add("eating", P, "banana", 0.8)
    add("eating", GRAZERS, ("grass", "hay"), 1.0)
    add("eating", ("giraffe", "elephant"), ("leaf", "tree", "branch"), 0.7)
    add("eating", GRAZERS, ("food", "plant"), 0.3)
    add("eating", ("bird", "dog"), ("food", "grass"), 0.25)
    add("eating", ("elephant", "dog", "bird"), "banana", 0.05)
    add("cutting", P, ("cake", "pizza"), 1.0)
    add("cutting", P, ("food", "paper", "banana"), 0.3)
    add("cutting", P, ("hair", "branch"), 0.1)
    add("cutting", "knife", ("food", "cake", "pizza", "banana"), 0.5)
    add("touching", P, ("dog", "horse", "elephant", "giraffe", *P), 0.3)
    add("touching", "hand", ("face", "hair", "head", "dog", "horse", "table", "car"), 0.3)
    add("touching", ANIMALS, ANIMALS, 0.15)
    add("touching", ("tree", "branch"), ("wire", "roof", "building"), 0.2)
    add("swinging", P, ("bat", "racket"), 1.0)
    add("swinging", P, ("umbrella", "bag"), 0.1)
    add("swinging", "elephant", "trunk", 0.2, "contain")
    add("swinging", ("dog", "horse", "cow"), "tail", 0.1, "contain")
    add("throwing", P, ("frisbee", "ball"), 1.0)
    add("throwing", P, ("snow", "banana", "paper"), 0.1)
    add("playing with", "dog", ("frisbee", "ball"), 0.8)
    add("playing with", "dog", ("dog", *P), 0.4)
    add("playing with", P, ("dog", "ball", "frisbee", "kite"), 0.5)
    add("playing with", K, ("snow", "sand", "water"), 0.4)
    add("playing with", "elephant", "water", 0.1)
    add("playing", P, ("frisbee", "ball"), 0.8)
    add("playing", (*K, "dog"), ("snow", "beach", "sand", "water", "grass"), 0.25)
    add("hitting", P, "ball", 1.0)
    add("hitting", "racket", "ball", 0.5)
    add("hitting", "wave", ("rock", "beach", "boat", "surfboard"), 0.3)
    add("hitting", "surfboard", "wave", 0.1)

    # Seeing.
    add("looking at", P, ("phone", "book", "paper", "laptop"), 1.0)
    add("looking at", P, ("dog", "food", "sign", "bird", "elephant", "giraffe", "horse", *P, "water", "window",
                          "clock", "kite", "plate", "cake", "pizza"), 0.35)
    add("looking at", ANIMALS, (*P, "dog", "food", "bird"), 0.25)
    add("watching", P, (*P, "elephant", "giraffe", "horse", "train", "bird", "wave", "boat", "dog", "plane"), 0.4)
    add("watching", ("dog", "cow", "sheep"), (*P, "bird"), 0.15)
    add("flying", P, "kite", 1.0, "look")
    add("flying", ("bird", "plane"), ("sky", "water", "beach", "wave", "tree", "building", "boat", "mountain", "hill"),
        0.25)

    # Spatial.
    scene_things = ("bench", "table", "tree", "building", "fence", "pole", "sign", "umbrella", "bike", "chair", "house",
                    "door", "window", "car", "rock", "water", "bus", "train")
    add("near", P, (*P, *ANIMALS, *scene_things), 0.45)
    add("near", ANIMALS, (*ANIMALS, "tree", "fence", "water", "rock", "bush", *P), 0.45)
    add("near", VEHICLES, (*VEHICLES, "building", "tree", "sign", "pole", "light", "sidewalk", "fence", "house"), 0.4)
    add("near", ("tree", "pole", "sign", "bench", "fence", "light", "post", "lamp", "bush"),
        ("building", "house", "street", "sidewalk", "tree", "fence", "bench", "pole", "sign", "car", "road"), 0.35)
    add("near", (*TABLEWARE, *FOOD), (*TABLEWARE, *FOOD, "knife"), 0.45)
    add("near", ("chair", "lamp", "cabinet"), ("table", "window", "lamp", "chair", "bed", "couch"), 0.4)
    add("near", "boat", ("beach", "water", "rock", "boat", "bridge"), 0.4)
    add("behind", P, (*P, "fence", "table", "car", "bench", "counter", "tree"), 0.4)
    add("behind", ANIMALS, ("fence", "tree", *ANIMALS, "rock"), 0.4)
    add("behind", "tree", ("building", "house", "fence", "car", "bench", "sign", *GRAZERS, *P), 0.35)
    add("behind", BUILDINGS, ("tree", "car", "bus", "train", "fence", "sign", "pole", *P), 0.35)
    add("behind", ("mountain", "hill"), ("tree", "building", "house", "water", "field", *GRAZERS), 0.35)
    add("behind", VEHICLES, (*VEHICLES, "fence", "pole"), 0.3)
    add("behind", "fence", (*GRAZERS, *P, "dog"), 0.3)
    add("in front of", P, ("building", "house", "tree", "car", "bus", "train", "window", "door", "table", "fence",
                           "sign", "wall", "counter", *P), 0.4)
    add("in front of", ANIMALS, ("tree", "fence", "building", "mountain", "water", *ANIMALS), 0.3)
    add("in front of", VEHICLES, ("building", "house", "tree", "sign", *VEHICLES), 0.3)
    add("in front of", ("sign", "bench", "tree", "pole", "fence", "car"), ("building", "house", "tree", "window"), 0.3)
    add("between", P, P, 0.4)
    add("between", ("pole", "tree", "sign", "post"), ("car", "building", "tree", "bus"), 0.3)
    add("between", "car", ("car", "bus", "truck"), 0.3)
    add("between", ANIMALS, (*ANIMALS, "tree"), 0.2)
    add("between", ("plate", "cup", "bottle"), TABLEWARE, 0.2)
    add("standing next to", P, (*P, "car", "bus", "train", "building", "tree", "fence", "table", "horse", "elephant",
                                "bench", "sign", "bike", "motorcycle"), 0.5)
    add("standing next to", ANIMALS, (*ANIMALS, "tree", "fence", "water", "rock"), 0.45)
    add("standing near", P, (*P, "car", "bus", "train", "building", "tree", "fence", "table", "horse", "elephant",
                             "bench", "water"), 0.45)
    add("standing near", ANIMALS, (*ANIMALS, "tree", "fence", "water", "rock"), 0.45)
    add("standing by", P, (*P, "car", "train", "tree", "fence", "table", "water", "bike"), 0.35)
    add("standing by", ANIMALS, (*ANIMALS, "tree", "fence", "water"), 0.3)
    add("standing behind", P, ("fence", "table", "counter", *P, "car", "bench", "bike"), 0.5)
    add("standing behind", ANIMALS, ("fence", "tree", *ANIMALS, "rock"), 0.4)
    add("outside", P, ("building", "house", "window", "bus", "train", "car"), 0.4)
    add("outside", (*ROAD_VEHICLES, "bench", "table", "sign", "tree", "plant", "dog"), ("building", "house", "window"),
        0.3)
    add("above", ("sign", "light", "lamp", "clock"), ("door", "street", "window", "table", "counter", "bed"), 0.5)
    add("above", "window", "door", 0.4)
    add("above", "cloud", ("mountain", "hill", "tree", "building", "water", "ocean"), 0.5)
    add("above", ("bird", "plane", "kite"), ("water", "beach", "tree", "building", "ocean"), 0.4)
    add("above", "shelf", ("table", "cabinet", "counter"), 0.4)
    add("above", "umbrella", ("table", *P), 0.3)
    add("above", "wire", ("street", "track", "car", "train", "bus"), 0.4)
    add("above", ("roof", "branch"), ("door", "window", *P, "bench", "car"), 0.2)
    add("over", "wire", ("street", "track"), 0.5)
    add("over", "umbrella", ("table", *P, "bench"), 0.5)
    add("over", "bridge", ("water", "street", "track"), 0.6)
    add("over", ("sign", "light"), "street", 0.4)
    add("over", ("bird", "plane"), ("water", "beach", "ocean"), 0.3)
    add("over", "cloud", ("mountain", "hill"), 0.3)
    add("over", "light", ("table", "counter"), 0.3)
    add("over", ("jacket", "coat"), "shirt", 0.3, "cover")
    add("under", "dog", ("table", "umbrella", "chair", "bench"), 0.5)
    add("under", P, ("umbrella", "tree"), 0.6)
    add("under", ("bench", "chair", "table"), ("umbrella", "tree"), 0.4)
    add("under", (*ROAD_VEHICLES,), ("tree", "bridge", "wire"), 0.2)
    add("under", ("shelf", "cabinet"), ("counter", "window", "table"), 0.3)
    add("under", ("bag", "box"), ("table", "bench", "chair", "seat"), 0.3)
    add("under", "pillow", "head", 0.2)
    add("supporting", ("pole", "post"), ("sign", "wire", "light", "roof", "umbrella", "fence"), 0.4)
    add("supporting", "leg", ("table", "chair", "bench"), 0.3, "inside_low")
    add("supporting", "table", ("plate", "food", "lamp"), 0.2)
    add("supporting", "trunk", ("branch", "tree"), 0.2, "inside_low")
    add("along", ("tree", "fence", "pole", "light", "post"), ("street", "sidewalk", "road", "track", "beach"), 0.5)
    add("along", (*BUILDINGS, "car", "bench", "rock"), ("street", "road", "sidewalk", "water", "beach"), 0.3)
    add("lining", ("tree", "building", "car", "pole", "fence"), ("street", "sidewalk", "road", "track"), 0.4)
    add("lining", "tile", ("wall", "floor"), 0.2)
    add("across", ("wire", "bridge", "line", "shadow"), ("street", "track", "road", "water", "grass"), 0.4)
    add("across", (*BUILDINGS, "tree", "car"), ("street", "road", "water"), 0.3)
    add("in middle of", P, ("street", "field", "water", "road", "snow"), 0.4)
    add("in middle of", ANIMALS, ("field", "street", "road", "water", "grass"), 0.3)
    add("in middle of", ("tree", "rock", "boat", "car"), ("field", "water", "grass", "snow", "street"), 0.3)

    # Attachment, surfaces and material.
    add("attached to", "sign", ("pole", "post", "building", "fence", "wall"), 0.7)
    add("attached to", "wire", ("pole", "post", "building"), 0.5)
    add("attached to", "light", ("pole", "building", "wall", "bike", "motorcycle"), 0.4)
    add("attached to", "handle", ("door", "cabinet", "bag", "cup"), 0.5, "inside")
    add("attached to", ("wheel", "seat"), ("bike", "skateboard", "car", "motorcycle"), 0.3, "inside")
    add("attached to", "clock", ("building", "pole", "wall", "tower"), 0.4)
    add("attached to", "mirror", ("car", "motorcycle", "truck"), 0.4, "inside")
    add("attached to", ("box", "kite"), ("pole", "wire"), 0.2)
    add("leaning on", (*BOARDS, "bike"), ("fence", "wall", "tree", "pole", "building", "bench", "car"), 0.5)
    add("leaning on", P, ("fence", "table", "car", "counter", "wall", "railing", "bench", "pole"), 0.5)
    add("leaning on", "sign", ("pole", "wall", "fence"), 0.2)
    add("against", (*BOARDS, "bike"), ("fence", "wall", "tree", "pole", "building"), 0.4)
    add("against", P, ("wall", "fence", "railing", "car"), 0.3)
    add("against", "wave", "rock", 0.2)
    add("against", "pillow", ("wall", "couch", "bed"), 0.2)
    add("mounted on", ("sign", "clock", "light", "lamp", "box", "mirror", "shelf"), ("pole", "wall", "building",
                                                                                    "post"), 0.4)
    add("connected to", "wire", ("pole", "building", "house", "post"), 0.6)
    add("connected to", "pole", "wire", 0.3)
    add("connected to", "handle", ("door", "cabinet"), 0.2)
    add("connected to", "train", "train", 0.2)
    add("hanging from", ("light", "lamp"), ("pole", "wire", "ceiling", "tree", "building"), 0.6)
    add("hanging from", "sign", ("pole", "building", "wire", "post"), 0.5)
    add("hanging from", ("banana", "leaf"), ("tree", "branch"), 0.4)
    add("hanging from", "wire", ("pole", "post"), 0.4)
    add("hanging from", ("bag", "glove", "umbrella"), ("chair", "hand", "pole"), 0.2)
    add("hanging from", ("clock", "plant", "flower", "kite"), ("pole", "ceiling", "building", "tree"), 0.25)
    add("hanging in", ("light", "lamp"), ("ceiling", "window", "tree"), 0.3)
    add("hanging in", "banana", "tree", 0.2)
    add("hanging in", "sign", "window", 0.4)
    add("hanging in", ("flower", "plant", "picture", "clock"), ("window", "wall"), 0.2)
    add("hanging in", ("coat", "jacket", "shirt"), ("cabinet", "window"), 0.1)
    add("for", "sign", ("street", "building", "bus", "train"), 0.3, "near")
    add("for", ("pole", "post"), ("sign", "light", "wire"), 0.3)
    add("for", "handle", ("door", "cabinet", "bag"), 0.3, "inside")
    add("for", "track", "train", 0.4, "under")
    add("for", "seat", ("bike", "motorcycle"), 0.2, "inside")
    add("for", ("plate", "bowl", "box"), ("food", "pizza"), 0.2, "contain")
    add("for", "umbrella", ("beach", "table"), 0.2, "above")
    add("for", "light", ("street", "bike", "car"), 0.2)
    add("from", ("leaf", "branch", "banana"), "tree", 0.4, "inside")
    add("from", "wire", ("pole", "building"), 0.3)
    add("from", "light", ("lamp", "window"), 0.2, "inside")
    add("to", "door", ("building", "house", "cabinet", "car", "bus", "train"), 0.6)
    add("to", "handle", ("door", "cabinet"), 0.3)
    add("to", "wire", "pole", 0.3, "attach")
    add("to", "window", ("building", "house"), 0.2)
    add("covering", "snow", ("mountain", "hill", "ground", "tree", "roof", "street", "rock", "field", "grass", "car",
                             "bench"), 0.8)
    add("covering", "cloud", ("sky", "mountain", "hill"), 0.5)
    add("covering", ("leaf", "grass"), ("tree", "ground", "branch", "hill", "field"), 0.4)
    add("covering", "tile", ("floor", "wall", "roof"), 0.4)
    add("covering", "hair", ("head", "face", "ear", "neck"), 0.3)
    add("covering", ("paper", "umbrella"), "table", 0.15)
    add("covering", ("jacket", "coat"), "shirt", 0.1)
    add("painted on", (*GRAPHICS, "line", "picture", "stripe", "sign"),
        ("street", "road", "wall", "train", "bus", "truck", "car", "building", "boat", "sidewalk", "board", "plane"),
        0.5)
    add("printed on", (*GRAPHICS, "picture", "flower"), (*SURFACES_WITH_PRINT, "paper", "sign", "book", "t-shirt"),
        0.5)
    add("written on", ("letter", "word", "number"), (*WRITABLE, "board", "box", "shirt", "street", "truck"), 0.5)
    add("written on", "logo", WRITABLE, 0.15)
    add("says", "sign", ("letter", "word", "number"), 0.5)
    add("says", ("shirt", "paper", "box", "bus", "train", "truck", "board"), ("letter", "word", "logo", "number"), 0.25)
    add("shows", "sign", ("letter", "picture", "number", "word", "logo", *P), 0.35)
    add("shows", "clock", ("hand", "number"), 0.4)
    add("shows", ("picture", "paper", "book", "shirt"), (*P, "dog", "flower", "tree", "mountain", "logo"), 0.2)
    add("shows", ("sign", "paper", "box"), ("food", "banana", "pizza"), 0.1)
    add("adorning", "flower", ("table", "building", "house", "window", "vase", "hat", "cake", "shirt"), 0.4)
    add("adorning", ("logo", "letter"), ("shirt", "building", "hat", "cap", "sign", "bus", "train"), 0.2)
    add("adorning", ("light", "plant", "picture"), ("tree", "window", "building", "house", "table", "wall"), 0.2)
    add("growing on", ("leaf", "flower", "plant", "grass"), ("tree", "branch", "rock", "hill", "fence", "building",
                                                              "wall", "mountain"), 0.4)
    add("growing on", "tree", ("hill", "mountain", "rock"), 0.3)
    add("growing in", ("plant", "flower", "tree", "grass", "bush"), ("field", "vase", "grass", "dirt", "ground",
                                                                    "water", "hill", "snow"), 0.4)
    add("built into", ("shelf", "cabinet"), ("wall", "building", "house", "counter"), 0.4)
    add("built into", ("window", "door"), ("building", "house", "wall", "roof", "door", "cabinet"), 0.3)
    add("built into", ("light", "lamp", "clock", "sign"), ("ceiling", "wall", "building", "tower", "pole"), 0.2)
    add("built into", "seat", "boat", 0.1)
    add("on bottom of", ("wheel", "tire"), ("skateboard", "car", "bus", "truck", "train", "bike", "motorcycle"), 0.4)
    add("on bottom of", ("letter", "logo"), ("sign", "board", "paper", "box", "shirt", "bus", "truck"), 0.2)
    add("on bottom of", "shoe", "leg", 0.2)
    add("on bottom of", "leg", ("table", "chair"), 0.2)
    add("surrounding", "fence", ("field", "building", "house", "tree", "grass"), 0.5)
    add("surrounding", ("tree", "bush"), ("building", "house", "field", "water", "hill"), 0.3)
    add("surrounding", "hair", "face", 0.3)
    add("surrounding", ("water", "grass"), ("rock", "boat", "tree", "building"), 0.3)
    add("made of", (*BUILDINGS, "wall", "house"), ("brick", "wood", "stone", "rock", "glass"), 0.4)
    add("made of", "fence", ("wire", "wood", "metal"), 0.4)
    add("made of", ("table", "bench", "chair"), ("wood", "metal", "glass", "rock", "stone"), 0.4)
    add("made of", "roof", ("tile", "metal"), 0.4)
    add("made of", ("floor", "wall"), ("tile", "brick", "wood"), 0.3)
    add("made of", ("sign", "pole", "post"), ("metal", "wood"), 0.3)
    add("made of", "window", "glass", 0.5)
    add("made of", ("cup", "bottle", "bowl"), ("glass", "plastic"), 0.3)
    add("full of", ("bowl", "plate", "box", "bag", "cup", "glass", "bottle"), (*FOOD, "water", "pizza"), 0.4)
    add("full of", "shelf", ("book", "box", "bottle"), 0.5)
    add("full of", "tree", "leaf", 0.2)
    add("full of", "sky", "cloud", 0.4)
    add("full of", "street", ("car", "bus"), 0.2, "inside")
    add("full of", "field", ("sheep", "cow", "grass", "flower"), 0.2)
    add("full of", ("bus", "train", "boat"), P, 0.2)
    add("full of", "vase", "flower", 0.4)
    add("filled with", ("bowl", "plate", "box", "bag", "cup", "glass", "bottle"), (*FOOD, "water"), 0.4)
    add("filled with", ("shelf", "cabinet"), ("book", "box", "bottle", "plate", "bowl", "cup"), 0.3)
    add("filled with", "vase", ("flower", "water"), 0.3)
    add("contains", ("bowl", "box", "bag", "shelf", "plate", "bottle", "glass", "cup", "cabinet", "vase"),
        (*FOOD, "book", "flower", "water", "paper"), 0.3)
    add("floating in", "boat", ("water", "ocean"), 1.0)
    add("floating in", "boat", "wave", 0.3)
    add("floating in", ("surfboard", "board"), ("water", "wave", "ocean"), 0.4)
    add("floating in", (*P, "bird"), "water", 0.3)
    add("floating in", ("leaf", "ball"), "water", 0.15)
    add("floating in", ("cloud", "kite"), "sky", 0.3)
    add("floating in", (*P, "dog"), "wave", 0.05)
    return f


# ---------------------------------------------------------------------------------------------
# Scenes: (weight, people weight, favoured entities, background (extra-object) entities). Every
# entity can appear anywhere, but entities outside a scene's lists rarely do.

SCENES = {
    "street": (0.24, 1.0,
               ("car", "bus", "truck", "motorcycle", "bike", "building", "sign", "pole", "light", "street", "sidewalk",
                "window", "door", "tree", "fence", "post", "wire", "clock", "bench", "bag", "umbrella", "dog", "lamp",
                "house", "road", "line", "tower", "bridge", "phone", "wall", "plant", "flower", "box"),
               ("sky", "cloud", "road", "line", "shadow", "wall", "building", "window", "tree", "sign", "pole",
                "sidewalk", "street", "car", "light", "bush", "ground", "post")),
    "beach": (0.1, 1.0,
              ("beach", "wave", "surfboard", "boat", "bird", "umbrella", "board", "rock", "hill", "dog", "water",
               "ocean", "sand", "sky", "cloud", "kite", "short", "frisbee", "ball", "bag", "mountain"),
              ("sky", "cloud", "water", "ocean", "sand", "wave", "beach", "rock", "hill", "shadow", "bird")),
    "kitchen": (0.1, 0.9,
                ("table", "plate", "bowl", "cup", "glass", "bottle", "food", "banana", "chair", "cabinet", "shelf",
                 "box", "paper", "book", "cake", "pizza", "knife", "counter", "floor", "wall", "window", "door",
                 "lamp", "handle", "vase", "flower", "phone", "laptop"),
                ("wall", "floor", "counter", "cabinet", "window", "handle", "shelf", "door", "ceiling", "light",
                 "table", "chair", "plate", "bottle", "box")),
    "home": (0.08, 0.8,
             ("chair", "pillow", "table", "lamp", "shelf", "book", "cabinet", "window", "door", "clock", "plant",
              "flower", "box", "paper", "dog", "bed", "floor", "wall", "picture", "laptop", "vase", "mirror", "couch",
              "phone"),
             ("wall", "floor", "ceiling", "window", "picture", "pillow", "lamp", "shelf", "book", "door", "couch",
              "bed", "plant")),
    "farm": (0.13, 0.4,
             ("cow", "sheep", "horse", "zebra", "giraffe", "elephant", "bird", "dog", "grass", "field", "fence", "tree",
              "hill", "mountain", "rock", "dirt", "post", "hay", "cart", "house", "water", "bush", "ground"),
             ("sky", "cloud", "grass", "field", "dirt", "tree", "bush", "fence", "hill", "ground", "rock", "mountain",
              "shadow", "water")),
    "snow": (0.07, 1.0,
             ("snow", "mountain", "hill", "tree", "helmet", "jacket", "glove", "coat", "sign", "pole", "board", "rock",
              "sky", "cloud", "house"),
             ("snow", "sky", "cloud", "mountain", "tree", "hill", "shadow", "rock", "pole")),
    "station": (0.09, 0.6,
                ("train", "track", "pole", "wire", "sign", "light", "building", "platform", "bus", "window", "door",
                 "logo", "letter", "clock", "number", "word", "bridge", "tower", "plane"),
                ("sky", "cloud", "track", "platform", "pole", "wire", "building", "tree", "ground", "light", "sign",
                 "line")),
    "park": (0.13, 1.0,
             ("skateboard", "dog", "bench", "tree", "grass", "ball", "frisbee", "kite", "helmet", "sidewalk", "fence",
              "bike", "bird", "plant", "flower", "sign", "pole", "racket", "bat", "field", "sky", "bush", "water"),
             ("grass", "tree", "sky", "cloud", "bush", "field", "shadow", "ground", "fence", "bench", "sidewalk",
              "dirt")),
    "harbour": (0.06, 0.6,
                ("boat", "water", "bird", "building", "pole", "bridge", "ocean", "rock", "sky", "cloud", "sign",
                 "house", "light", "tower", "wave"),
                ("water", "sky", "cloud", "building", "boat", "pole", "tree", "rock", "bridge")),
}

# Phrases for filler captions (none of them a vocabulary entity, so they add no triplet).
SCENE_PLACES = {
    "street": ("city", "downtown area", "town"), "beach": ("seaside", "shore"), "kitchen": ("kitchen",),
    "home": ("living room", "home"), "farm": ("countryside", "pasture"), "snow": ("ski slope", "winter"),
    "station": ("train station", "depot"), "park": ("park", "playground"), "harbour": ("harbor", "marina"),
}

# Pose groups: (strength of the subject-role component, strength of the object-role component).
# Postures and manipulation shape appearance strongly, spatial relations barely.
POSE_GROUPS = {
    "part": (0.4, 0.4), "wear": (0.5, 0.5), "on": (0.4, 0.3), "in": (0.4, 0.3), "stand": (1.0, 0.4),
    "sit": (1.0, 0.5), "lie": (1.0, 0.4), "walk": (1.0, 0.4), "ride": (1.0, 0.8), "hold": (1.0, 0.6),
    "carry": (1.0, 0.6), "look": (0.8, 0.2), "eat": (1.0, 0.6), "play": (1.0, 0.6), "near": (0.2, 0.2),
    "behind": (0.25, 0.25), "front": (0.25, 0.25), "above": (0.3, 0.3), "under": (0.3, 0.3), "hang": (0.6, 0.3),
    "attach": (0.4, 0.3), "cover": (0.6, 0.5), "contain": (0.4, 0.5), "surface": (0.5, 0.3), "park": (0.7, 0.3),
    "drive": (0.8, 0.3), "grow": (0.5, 0.3), "cross": (0.8, 0.3), "lean": (0.8, 0.4), "pull": (0.9, 0.6),
    "float": (0.6, 0.3), "fly": (0.8, 0.3), "touch": (0.6, 0.4), "at": (0.5, 0.2), "surround": (0.4, 0.3),
    "support": (0.5, 0.3), "along": (0.3, 0.2), "other": (0.3, 0.3),
}

# Box geometry of a relation: how the subject box s sits relative to the object box o.
#   x: ("inside", u_lo, u_hi)  one box inside the other horizontally, at relative position u.
#      ("side", g_lo, g_hi)    side by side, gap g (in half-widths; negative = overlap), either side.
#      ("overlap", lo, hi)     centres |dx| in [lo, hi] * (w_s + w_o) / 2, either side.
#      ("hand", lo, hi)        the object at the subject's side, |dx| in [lo, hi] * w_s.
#   y: ("lin", a_lo, a_hi, b_lo, b_hi)  s_cy - o_cy = a * h_o + b * h_s.
#      ("inside", v_lo, v_hi)  the inner box at relative height v of the outer (the inner
#                              entity's own body position when it has one).
#   inner: "s" or "o" when that box lies inside the other (sizes are then relative to it).
#   scale: log size ratio of the subject (e.g. in front of: larger, closer to the camera).
GEOMETRY = {
    "on_top": dict(x=("inside", 0.05, 0.95), y=("lin", -0.47, -0.2, -0.5, -0.5)),
    "sit": dict(x=("inside", 0.2, 0.8), y=("lin", -0.35, 0.0, -0.5, -0.5)),
    "ride": dict(x=("inside", 0.35, 0.65), y=("lin", -0.2, 0.15, -0.5, -0.5)),
    "lie": dict(x=("inside", 0.1, 0.9), y=("lin", -0.45, -0.1, -0.5, -0.5)),
    "under": dict(x=("inside", 0.1, 0.9), y=("lin", 0.25, 0.6, -0.25, 0.5)),
    "above": dict(x=("overlap", 0.0, 0.6), y=("lin", -1.3, -0.55, -0.5, -0.5)),
    "hang": dict(x=("overlap", 0.0, 0.5), y=("lin", -0.5, 0.2, 0.5, 0.5)),
    "near": dict(x=("side", 0.05, 0.8), y=("lin", 0.35, 0.65, -0.5, -0.5)),
    "touch": dict(x=("side", -0.25, 0.02), y=("lin", 0.3, 0.7, -0.5, -0.5)),
    "look": dict(x=("side", 0.4, 2.5), y=("lin", 0.2, 0.8, -0.5, -0.5)),
    "front": dict(x=("overlap", 0.0, 0.5), y=("lin", 0.53, 0.8, -0.5, -0.5), scale=0.2),
    "behind": dict(x=("overlap", 0.0, 0.5), y=("lin", 0.2, 0.47, -0.5, -0.5), scale=-0.2),
    "hold": dict(x=("hand", 0.1, 0.5), y=("lin", 0.0, 0.0, -0.2, 0.15)),
    "hold_up": dict(x=("hand", 0.1, 0.5), y=("lin", 0.0, 0.0, 0.3, 0.65)),
    "eat": dict(x=("hand", 0.0, 0.4), y=("lin", 0.0, 0.0, 0.1, 0.4)),
    "contain": dict(x=("inside", 0.1, 0.9), y=("inside", 0.1, 0.9), inner="o"),
    "surround": dict(x=("inside", 0.3, 0.7), y=("inside", 0.3, 0.7), inner="o"),
    "cover": dict(x=("inside", 0.3, 0.7), y=("inside", 0.3, 0.7), inner="o", scale=0.25),
    "inside": dict(x=("inside", 0.1, 0.9), y=("inside", 0.1, 0.9), inner="s"),
    "inside_low": dict(x=("inside", 0.1, 0.9), y=("inside", 0.55, 1.0), inner="s"),
    "inside_mid": dict(x=("inside", 0.35, 0.65), y=("inside", 0.35, 0.65), inner="s"),
    "attach": dict(x=("overlap", 0.0, 0.45), y=("lin", -0.4, 0.3, 0.0, 0.0)),
    "along": dict(x=("overlap", 0.0, 1.0), y=("lin", -0.5, 0.0, -0.5, -0.5)),
    "across": dict(x=("overlap", 0.0, 0.3), y=("lin", -0.2, 0.3, 0.0, 0.0)),
}

# ---------------------------------------------------------------------------------------------
# Compilation.


@dataclasses.dataclass(frozen=True)
class Commonsense:
    """The compiled latent world.

    Entities 0..99 are the vocabulary's (in its order), then the out-of-vocabulary ones.
    Latent triplets t have subject `subj[t]`, latent predicate `pred[t]` (vocabulary relation
    index 0..99, i.e. relation id - 1) and object `obj[t]`. Surface predicates are the names an
    annotator may write: the 100 vocabulary predicates first, then paraphrases outside it.

    Attributes:
      entities, kinds, size, aspect, part_scale, body_v, image_v: per entity (NaN = none).
      predicates: the 100 vocabulary predicates.
      subj, pred, obj, commonness, weight: per latent triplet; weight is the sampling mass
        (the predicate's mass shared by commonness ** power within the predicate).
      geometry, pose: per latent triplet, indices into `geometry_names` / `pose_names`.
      ownership: per latent triplet, True for part-of-owner relations (has, wearing).
      render_surface, render_inverse, render_prob: [T, K] the wordings of each triplet
        (surface index, inverse flag, probability; surface -1 pads).
      surface_names: surface predicate names.
      scene_names, scene_prob, scene_affinity [Z, E], scene_background [Z, E].
      truth: list of (subject, predicate, object, commonness) over vocabulary names.
    """

    entities: tuple[str, ...]
    kinds: tuple[str, ...]
    size: np.ndarray
    aspect: np.ndarray
    part_scale: np.ndarray
    body_v: np.ndarray
    image_v: np.ndarray
    predicates: tuple[str, ...]
    subj: np.ndarray
    pred: np.ndarray
    obj: np.ndarray
    commonness: np.ndarray
    weight: np.ndarray
    geometry: np.ndarray
    pose: np.ndarray
    ownership: np.ndarray
    render_surface: np.ndarray
    render_inverse: np.ndarray
    render_prob: np.ndarray
    surface_names: tuple[str, ...]
    geometry_names: tuple[str, ...]
    pose_names: tuple[str, ...]
    scene_names: tuple[str, ...]
    scene_prob: np.ndarray
    scene_affinity: np.ndarray
    scene_background: np.ndarray
    truth: list[tuple[str, str, str, float]]

    @property
    def num_entities(self) -> int:
        return len(self.entities)


def _parse_entities():
    rows = [line.split() for line in _ENTITY_TABLE.strip().splitlines()]

    def num(value):
        return float("nan") if value == "-" else float(value)

    names = tuple(r[0] for r in rows)
    cols = [np.array([num(r[k]) for r in rows]) for k in range(2, 8)]
    return names, tuple(r[1] for r in rows), cols


def entity_kinds() -> dict[str, str]:
    """Every entity of the world's table (the vocabulary's first) by name -> its kind (person, animal, ...)."""
    names, kinds, _ = _parse_entities()
    return dict(zip(names, kinds, strict=True))


OWNED_KINDS = ("bodypart", "clothing", "part", "plantpart", "mark", "material")  # Belong to an owner.
GRADE2_THRESHOLD = 0.3  # Commonness from which a plausible triplet counts as obviously common.


def build(
    commonsense_seed: int = 0, power: float = 1.5, jitter: float = 0.3, background_rate: float = 0.03
) -> Commonsense:
    """Compiles the tables: latent triplets with commonness, renderings, scenes and the truth.

    Args:
      commonsense_seed: seed of the per-triplet commonness jitter.
      power: sampling weight of a triplet within its predicate is commonness ** power.
      jitter: standard deviation of the log-normal commonness jitter.
      background_rate: affinity of a scene for entities it does not list.
    """
    vocab = benchmark_vocab()
    names, kinds, (size, aspect, salience, part, body_v, image_v) = _parse_entities()
    num_vocab = len(vocab.entities)  # The table's first entities; the others appear only as context.
    if names[:num_vocab] != vocab.entities:
        raise ValueError("the world's entity table must start with the vocabulary entities, in order")
    index = {n: i for i, n in enumerate(names)}
    preds = vocab.predicates
    pindex = {p: i for i, p in enumerate(preds)}
    geometry_names = tuple(GEOMETRY)
    pose_names = tuple(POSE_GROUPS)

    # Latent triplets: the largest frame weight wins.
    best: dict[tuple[int, int, int], tuple[float, str]] = {}
    for pred, subjects, objects, w, geom in _frames():
        if pred not in _LATENT:
            raise ValueError(f"frame predicate {pred!r} has no latent entry")
        geom = geom or _LATENT[pred][1]
        for s in subjects:
            for o in objects:
                if s not in index or o not in index:
                    raise ValueError(f"unknown entity in frame ({s}, {pred}, {o})")
                key = (index[s], pindex[pred], index[o])
                if key not in best or best[key][0] < w:
                    best[key] = (w, geom)
    keys = sorted(best)
    subj = np.array([k[0] for k in keys])
    pred = np.array([k[1] for k in keys])
    obj = np.array([k[2] for k in keys])
    frame_w = np.array([best[k][0] for k in keys])
    rng = np.random.default_rng([commonsense_seed, 7])
    raw = frame_w * np.sqrt(salience[subj] * salience[obj]) * np.exp(jitter * rng.standard_normal(len(keys)))
    common = np.maximum(1.0 - np.exp(-1.6 * raw), 0.01)  # Saturates smoothly below 1.
    geometry = np.array([geometry_names.index(best[k][1]) for k in keys])
    pose = np.array([pose_names.index(_LATENT[preds[p]][2]) for p in pred])
    ownership = np.isin(pred, [pindex["has"], pindex["wearing"]])

    # Sampling weight: the predicate's mass, shared by commonness ** power times the entities'
    # frequency prior (the vocabulary is in Visual Genome's frequency order: man first).
    mass = np.array([_LATENT[preds[p]][0] for p in pred])
    prior = np.concatenate([np.arange(1, num_vocab + 1) ** -0.5, np.full(len(names) - num_vocab, 0.3)])
    share = common**power * np.sqrt(prior[subj] * prior[obj])
    totals = np.zeros(len(preds))
    np.add.at(totals, pred, share)
    weight = mass * share / totals[pred]
    weight /= weight.sum()

    # Renderings.
    surface = list(preds)
    for table in _RENDER.values():
        for name, _, _ in table:
            if name not in surface:
                surface.append(name)
    width = max(len(t) for t in _RENDER.values())
    r_surface = np.full((len(preds), width), -1)
    r_inverse = np.zeros((len(preds), width), bool)
    r_prob = np.zeros((len(preds), width))
    for p, table in _RENDER.items():
        i = pindex[p]
        if table[0][:2] != (p, 0):
            raise ValueError(f"the first rendering of {p!r} must be itself")
        for k, (name, inverse, w) in enumerate(table):
            r_surface[i, k], r_inverse[i, k], r_prob[i, k] = surface.index(name), bool(inverse), w
        r_prob[i] /= r_prob[i].sum()

    # Scenes.
    scene_names = tuple(SCENES)
    z = len(scene_names)
    affinity = np.full((z, len(names)), background_rate)
    background = np.zeros((z, len(names)))
    for k, (_, people_w, favoured, extras) in enumerate(SCENES.values()):
        affinity[k, [index[n] for n in favoured if n in index]] = 1.0
        affinity[k, [index[n] for n in PEOPLE]] = people_w
        for n, kind in zip(names, kinds, strict=True):
            if kind in OWNED_KINDS:
                affinity[k, index[n]] = 1.0
        background[k, [index[n] for n in extras if n in index]] = 1.0
    scene_prob = np.array([s[0] for s in SCENES.values()])

    truth = _truth(names, num_vocab, preds, subj, pred, obj, common, r_surface, r_inverse, r_prob)
    return Commonsense(
        entities=names, kinds=kinds, size=size, aspect=aspect, part_scale=part, body_v=body_v, image_v=image_v,
        predicates=preds, subj=subj, pred=pred, obj=obj, commonness=common, weight=weight, geometry=geometry,
        pose=pose, ownership=ownership, render_surface=r_surface[pred], render_inverse=r_inverse[pred],
        render_prob=r_prob[pred], surface_names=tuple(surface), geometry_names=geometry_names,
        pose_names=pose_names, scene_names=scene_names, scene_prob=scene_prob / scene_prob.sum(),
        scene_affinity=affinity, scene_background=background, truth=truth,
    )


def _truth(names, num_vocab, preds, subj, pred, obj, common, r_surface, r_inverse, r_prob):
    """Plausible vocabulary triplets: latent ones and every vocabulary wording of them.

    A wording's commonness is the latent triplet's scaled by sqrt(wording prob / canonical prob)
    (at least 0.3 of it): "man on skateboard" is almost as common as "man standing on skateboard",
    "shirt worn by man" much less so than "man wearing shirt".
    """
    best: dict[tuple[int, int, int], float] = {}
    for s, p, o, c in zip(subj, pred, obj, common, strict=True):
        if s >= num_vocab or o >= num_vocab:
            continue
        for k in range(r_surface.shape[1]):
            sid = r_surface[p, k]
            if sid < 0 or sid >= len(preds):
                continue
            factor = max(0.3, float(np.sqrt(r_prob[p, k] / r_prob[p, 0])))
            key = (o, sid, s) if r_inverse[p, k] else (s, sid, o)
            best[key] = max(best.get(key, 0.0), float(c) * factor)
    return [(names[s], preds[p], names[o], round(c, 4)) for (s, p, o), c in sorted(best.items())]
