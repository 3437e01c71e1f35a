"""The paper's numbers, as data (Simonyan & Zisserman, arXiv:1409.1556v6, ILSVRC-2012 val; top-1 /
top-5 error %), for the report to set ours beside. Where the paper gives no number (a row of Table 4
for a fixed-S net, Table 9's rows), the entry is absent and the report says "-"."""

from __future__ import annotations

# Table 3 (one test scale, dense): (net, training scale) -> (top-1, top-5)
TABLE3 = {
    ("A", "256"): (29.6, 10.4), ("A-LRN", "256"): (29.7, 10.5), ("B", "256"): (28.7, 9.9),
    ("C", "256"): (28.1, 9.4), ("C", "384"): (28.1, 9.3), ("C", "jitter"): (27.3, 8.8),
    ("D", "256"): (27.0, 8.8), ("D", "384"): (26.8, 8.7), ("D", "jitter"): (25.6, 8.1),
    ("E", "256"): (27.3, 9.0), ("E", "384"): (26.9, 8.7), ("E", "jitter"): (25.5, 8.0),
}

# Table 4 (three test scales, dense), the jittered nets.
TABLE4 = {("D", "jitter"): (24.8, 7.5), ("E", "jitter"): (24.8, 7.5)}

# Table 5 (jittered nets, three test scales): net -> protocol -> (top-1, top-5)
TABLE5 = {
    "D": {"dense": (24.8, 7.5), "multi-crop": (24.6, 7.5), "dense+multi-crop": (24.4, 7.2)},
    "E": {"dense": (24.8, 7.5), "multi-crop": (24.6, 7.4), "dense+multi-crop": (24.4, 7.1)},
}

# Table 6: the fusion of D and E (jittered, three scales).
TABLE6 = {"dense": (24.0, 7.1), "multi-crop": (23.9, 7.2), "dense+multi-crop": (23.7, 6.8)}

# Table 8 (App. A.2, protocol 1: D, centre crop, true class; localisation error %): (head, layers)
TABLE8 = {("scr", "fc"): 36.4, ("pcr", "fc"): 34.3, ("pcr", "all"): 33.1}

# Table 9 in words (App. A.2, protocol 2): dense beats the centre crop by a wide margin, several test
# scales help, fusing the S = 256 and S = 384 nets helps; 25.3 % top-5 on the ILSVRC-2014 test set.
TABLE9_TEST_TOP5 = 25.3

SOURCE = ("K. Simonyan & A. Zisserman, Very Deep Convolutional Networks for Large-Scale Image "
          "Recognition, ICLR 2015 (arXiv:1409.1556v6)")
