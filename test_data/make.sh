#!/usr/bin/env bash
# Regenerate the project's own test audio (espeak-ng + sox) and its log-mels (flow2gan front-end).
# Usage: [PYTHON=/path/to/python] test_data/make.sh   (works from any directory)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${PYTHON:-python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# speak NAME VOICE PITCH SPEED TEXT -> $TMP/NAME.wav (espeak-ng native rate, 22050 Hz)
speak() {
  espeak-ng -v "$2" -p "$3" -s "$4" -w "$TMP/$1.wav" "$5"
}

# finish IN OUT RATE: trim edge silence, resample (sox VHQ), 0.1 s pads, peak -1 dBFS, 16-bit, no dither
finish() {
  sox -D "$1" -b 16 "$2" \
    silence 1 0.02 0.1% reverse silence 1 0.02 0.1% reverse \
    rate -v "$3" pad 0.1 0.1 norm -1
}

mkdir -p "$HERE/wav" "$HERE/wav_44k"

speak us_male_fox        en-us             45 190 "The quick brown fox jumps over the lazy dog."
speak gb_female_weather  en-gb+f4          60 170 "Heavy rain is expected across the north tonight."
speak scot_male_library  en-gb-scotland+m3 30 160 "Please return these books to the library."
speak us_female_question en-us+f2          75 150 "Have you ever seen the ocean at sunrise?"
for name in us_male_fox gb_female_weather scot_male_library us_female_question; do
  finish "$TMP/$name.wav" "$HERE/wav/$name.wav" 24000
done

# 44.1 kHz stereo: one voice on the left channel, another (entering 0.5 s later) on the right.
speak left  en-us+m2 40 165 "A gentle breeze moved the tall grass."
speak right en-gb+f3 70 165 "Bright lanterns glowed along the harbour."
finish "$TMP/left.wav" "$TMP/left44.wav" 44100
finish "$TMP/right.wav" "$TMP/right44.wav" 44100
sox -D "$TMP/right44.wav" "$TMP/right44_late.wav" pad 0.5 0
sox -D -M "$TMP/left44.wav" "$TMP/right44_late.wav" -b 16 "$HERE/wav_44k/stereo_two_voices.wav"

cd "$REPO"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$HERE/make_mels.py"
