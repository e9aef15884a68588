//! Range reads of a pack: neighbouring blobs are fetched with one read instead of one each.

use std::ops::Range;

/// A byte range of a pack read in one request, and the items (indexes into the sorted list
/// that was merged) it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRange {
    pub range: Range<u64>,
    pub items: Range<usize>,
}

/// Merges byte spans, sorted by start, into range reads: a gap under `max_gap` joins two
/// spans unless the range would grow past `max_len`; overlapping spans are always joined.
/// One span longer than `max_len` still gets a range of its own.
pub fn merge_spans(
    spans: impl IntoIterator<Item = Range<u64>>,
    max_gap: u64,
    max_len: u64,
) -> Vec<ReadRange> {
    let mut out: Vec<ReadRange> = Vec::new();
    for (i, span) in spans.into_iter().enumerate() {
        if let Some(last) = out.last_mut() {
            let joinable = span.start >= last.range.end && span.start - last.range.end < max_gap;
            let overlapping = span.start < last.range.end;
            if (joinable && span.end - last.range.start <= max_len) || overlapping {
                last.range.end = last.range.end.max(span.end);
                last.items.end = i + 1;
                continue;
            }
        }
        out.push(ReadRange {
            range: span,
            items: i..i + 1,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_gaps_join_and_large_ones_split() {
        let spans = [0..100, 100..150, 200..210, 5000..5010];
        assert_eq!(
            merge_spans(spans.clone(), 1000, 1 << 20),
            vec![
                ReadRange {
                    range: 0..210,
                    items: 0..3
                },
                ReadRange {
                    range: 5000..5010,
                    items: 3..4
                },
            ]
        );
        let r = merge_spans(spans.clone(), 1 << 20, 1 << 20);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].range, 0..5010);
        // The length cap splits even adjacent spans.
        let r = merge_spans(spans, 1 << 20, 160);
        assert_eq!(
            r.iter().map(|p| p.items.clone()).collect::<Vec<_>>(),
            vec![0..2, 2..3, 3..4]
        );
        assert!(merge_spans(std::iter::empty(), 1, 1).is_empty());
    }

    #[test]
    fn overlapping_spans_share_a_range_whatever_the_cap() {
        let r = merge_spans([0..100, 50..80, 90..300], 0, 10);
        assert_eq!(
            r,
            vec![ReadRange {
                range: 0..300,
                items: 0..3
            }]
        );
    }
}
