import pytest

from neurolm.data.channels import (INDEX, PAD_INDEX, VOCABULARY, UnknownChannelError, channel_indices, map_channels,
                                   normalize_name)


def test_vocabulary_order_matches_reference_indices():
    assert len(VOCABULARY) == 139
    assert VOCABULARY[0] == "FP1" and VOCABULARY[PAD_INDEX] == "pad" and PAD_INDEX == 136
    assert INDEX["FP1-F7"] == 120 and INDEX["P4-O2"] == 135 and VOCABULARY[-2:] == ("I1", "I2")
    assert INDEX["T3"] == 88 and INDEX["T7"] == 37 and INDEX["FTT9H"] == 114


@pytest.mark.parametrize("label, name", [
    ("EEG FP1-REF", "FP1"), ("EEG FP1-LE", "FP1"), ("Fp1", "FP1"), ("FP1", "FP1"), ("EEG Fp1-A2", "FP1"),
    ("EEG F4-M1", "F4"), ("EEG C3-M2", "C3"), ("EEG Cz", "CZ"), ("EEG T3-REF", "T3"), ("FP1-F7", "FP1-F7"),
    ("EEG A2-A1", "A2"), ("EOG E1-M2", None), ("EMG chin", None), ("ECG ECG", None), ("EEG EKG1-REF", None),
    ("PHOTIC-REF", None), ("HEO", None), ("FTT9h", "FTT9H"),
    ("Fc5.", "FC5"), ("Cz..", "CZ"), ("T10.", "T10"), ("Iz..", "IZ"),  # EEGMMIDB pads labels with dots
])
def test_normalize_name(label, name):
    assert normalize_name(label) == name


def test_t3_t7_aliasing_is_opt_in():
    assert normalize_name("EEG T3-REF") == "T3"
    assert normalize_name("EEG T3-REF", alias_t3_t7=True) == "T7"
    assert normalize_name("T6", alias_t3_t7=True) == "P8"


def test_map_channels_reports_missing_and_keeps_order():
    labels = ["EEG C4-M1", "EEG F4-M1", "EOG E1-M2", "EEG O2-M1"]
    assert map_channels(labels, ["F4", "C4", "O2"]) == {"F4": "EEG F4-M1", "C4": "EEG C4-M1", "O2": "EEG O2-M1"}
    with pytest.raises(UnknownChannelError, match="missing required channel.*C3"):
        map_channels(labels, ["F4", "C4", "O2", "C3"])
    assert list(map_channels(labels)) == ["C4", "F4", "O2"]


def test_channel_indices_names_unknown():
    assert channel_indices(["fp1", "PZ"]) == [0, INDEX["PZ"]]
    with pytest.raises(UnknownChannelError, match="XYZ"):
        channel_indices(["FP1", "XYZ"])
