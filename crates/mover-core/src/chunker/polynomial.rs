//! Polynomials over GF(2) packed in a u64, as restic's chunker uses them (spec §12.2, §12.6):
//! arithmetic, the Ben-Or irreducibility test and random polynomial generation.
//! Pure; must not chunk data itself.

use rand::RngCore;
use rand::rngs::OsRng;

/// A polynomial over GF(2): bit i is the coefficient of x^i. Addition is XOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Polynomial(pub u64);

/// Carry-less (GF(2)) product of two 64-bit polynomials; fits in 127 bits.
fn clmul(a: u64, b: u64) -> u128 {
    let a = u128::from(a);
    let mut res = 0u128;
    let mut b = b;
    while b != 0 {
        let i = b.trailing_zeros();
        res ^= a << i;
        b &= b - 1;
    }
    res
}

/// Degree of a 128-bit polynomial, -1 for zero.
fn deg128(x: u128) -> i32 {
    127 - x.leading_zeros() as i32
}

/// `x mod d` for a 128-bit dividend; `d` must be non-zero.
fn mod128(mut x: u128, d: u64) -> u64 {
    let d_deg = Polynomial(d).deg();
    let d = u128::from(d);
    loop {
        let x_deg = deg128(x);
        if x_deg < d_deg {
            // x_deg < d_deg <= 63, so x fits in u64.
            return x as u64;
        }
        x ^= d << (x_deg - d_deg);
    }
}

impl Polynomial {
    /// Degree: index of the highest set bit, -1 for the zero polynomial.
    pub fn deg(self) -> i32 {
        63 - self.0.leading_zeros() as i32
    }

    /// `self mod d`. Modulo the zero polynomial is undefined; it returns `self` unchanged
    /// so the operation stays total.
    pub fn modulo(self, d: Polynomial) -> Polynomial {
        if d.0 == 0 {
            return self;
        }
        Polynomial(mod128(u128::from(self.0), d.0))
    }

    /// `(self · f) mod g`, without overflow for any operands. Modulo zero returns the
    /// product truncated to 64 bits (see [`Polynomial::modulo`]).
    pub fn mulmod(self, f: Polynomial, g: Polynomial) -> Polynomial {
        let product = clmul(self.0, f.0);
        if g.0 == 0 {
            return Polynomial(product as u64);
        }
        Polynomial(mod128(product, g.0))
    }

    /// Greatest common divisor (Euclid over GF(2)).
    pub fn gcd(self, other: Polynomial) -> Polynomial {
        let (mut a, mut b) = (self, other);
        while b.0 != 0 {
            let r = a.modulo(b);
            a = b;
            b = r;
        }
        a
    }

    /// Ben-Or test: irreducible iff gcd(f, x^(2^i) − x mod f) = 1 for i = 1..=deg/2.
    /// Constants (degree < 1) are not irreducible.
    pub fn is_irreducible(self) -> bool {
        let d = self.deg();
        if d < 1 {
            return false;
        }
        let mut x_pow = Polynomial(2); // x
        for _ in 1..=d / 2 {
            x_pow = x_pow.mulmod(x_pow, self); // x^(2^i) mod f
            let q = Polynomial(x_pow.0 ^ 2).modulo(self); // minus x
            if self.gcd(q) != Polynomial(1) {
                return false;
            }
        }
        true
    }

    /// Lowercase hex without `0x` or leading zeros, as restic's config stores it.
    pub fn to_hex(self) -> String {
        format!("{:x}", self.0)
    }
}

impl std::fmt::Display for Polynomial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A random irreducible polynomial of degree 53 with constant term 1, exactly as restic's
/// `RandomPolynomial` draws it (spec §12.6).
pub fn random_irreducible() -> Polynomial {
    // About one in 27 candidates is irreducible, so restic's cap of 1 000 000 draws is never
    // reached in practice; drawing until success keeps this infallible.
    loop {
        let mut buf = [0u8; 8];
        OsRng.fill_bytes(&mut buf);
        let mut f = u64::from_le_bytes(buf);
        f &= (1 << 54) - 1;
        f |= (1 << 53) | 1;
        let p = Polynomial(f);
        if p.is_irreducible() {
            return p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: Polynomial = Polynomial(0x3DA3358B4DC173);

    #[test]
    fn irreducibility_vectors() {
        for p in [
            0x3DA3358B4DC173u64,
            0x2482734cacca49,
            0x25b468838dcb75,
            0x3a7013f3d578ed,
            0x249971770ab0ff,
        ] {
            assert!(Polynomial(p).is_irreducible(), "{p:#x} is irreducible");
        }
        for p in [
            0x38f1e565e288dfu64,
            0x30a8295b9d5c91,
            0x255f4350b962cb,
            0x267f776110a235,
            0x2f4dae10d41227,
            0x312daf4b284899,
            0x29dfb6553d01d1,
            0x3548245eb26257,
            0x3199e7ef4211b3,
            0x362f39017dae8b,
            0x200d57aa6fdacb,
            0x35e0a4efa1d275,
            0x2ced55b026577f,
            0x260b012010893d,
            0x2df29cbcd59e9d,
            0x3f2ac7488bd429,
            0x3e5cb1711669fb,
            0x226d8de57a9959,
            0x3c8de80aaf5835,
            0x2026a59efb219b,
            0x39dfa4d13fb231,
            0x3143d0464b3299,
        ] {
            assert!(!Polynomial(p).is_irreducible(), "{p:#x} is reducible");
        }
    }

    #[test]
    fn small_polynomials() {
        assert!(!Polynomial(0).is_irreducible());
        assert!(!Polynomial(1).is_irreducible());
        assert!(Polynomial(0b10).is_irreducible()); // x
        assert!(Polynomial(0b111).is_irreducible()); // x^2 + x + 1
        assert!(!Polynomial(0b101).is_irreducible()); // (x + 1)^2
        assert!(Polynomial(0b1011).is_irreducible()); // x^3 + x + 1
        assert_eq!(Polynomial(0).deg(), -1);
        assert_eq!(Polynomial(1).deg(), 0);
        assert_eq!(P.deg(), 53);
        assert_eq!(Polynomial(u64::MAX).deg(), 63);
    }

    #[test]
    fn arithmetic_vectors() {
        assert_eq!(
            Polynomial(0x230d2259defd).gcd(Polynomial(0x51b492b3eff2)),
            Polynomial(0b10011)
        );
        assert_eq!(
            Polynomial(0x1230).mulmod(Polynomial(0x230), Polynomial(0x55)),
            Polynomial(0x22)
        );
        assert_eq!(
            Polynomial(0x0eae8c07dbbb3026)
                .mulmod(Polynomial(0xd5d6db9de04771de), Polynomial(0xdd2bda3b77c9)),
            Polynomial(0x425ae8595b7a)
        );
    }

    /// The §12.3 table values follow from `modulo`; checking them pins the arithmetic.
    #[test]
    fn table_debug_values() {
        let d = P.deg();
        let out = |b: u64| {
            let mut h = Polynomial(b).modulo(P);
            for _ in 0..63 {
                h = Polynomial(h.0 << 8).modulo(P);
            }
            h.0
        };
        let modt = |b: u64| {
            let shifted = b << d;
            Polynomial(shifted).modulo(P).0 ^ shifted
        };
        assert_eq!(out(1), 0x17eb4232e19216);
        assert_eq!(out(2), 0x1275b1ee8ee55f);
        assert_eq!(out(0x80), 0x05b54453ea6b5c);
        assert_eq!(out(0xff), 0x0b80b98cecc39a);
        assert_eq!(modt(1), 0x3da3358b4dc173);
        assert_eq!(modt(2), 0x46e55e9dd64395);
        assert_eq!(modt(0x80), 0x1012ab55b228ad4d);
        assert_eq!(modt(0xff), 0x1ff7ac8a5af476a7);
    }

    #[test]
    fn fingerprint_vectors() {
        let fp = |bytes: &[u8]| {
            bytes.iter().fold(0u64, |h, &b| {
                Polynomial((h << 8) | u64::from(b)).modulo(P).0
            })
        };
        assert_eq!(fp(b"restic"), 0x726573746963);
        let seq: Vec<u8> = (0u8..0x40).collect();
        assert_eq!(fp(&seq), 0x44b76cac5cee3);
    }

    #[test]
    fn random_polynomials_have_restic_shape() {
        for _ in 0..5 {
            let p = random_irreducible();
            assert_eq!(p.deg(), 53);
            assert_eq!(p.0 & 1, 1);
            assert!(p.is_irreducible());
            let hex = p.to_hex();
            assert_eq!(hex.len(), 14);
            assert!(hex.starts_with('2') || hex.starts_with('3'));
        }
        assert_eq!(P.to_hex(), "3da3358b4dc173");
        assert_eq!(Polynomial(0x0abc).to_string(), "abc");
    }

    proptest! {
        #[test]
        fn mulmod_matches_definition(a in any::<u64>(), b in any::<u64>(), g in 2u64..) {
            let g = Polynomial(g);
            let r = Polynomial(a).mulmod(Polynomial(b), g);
            prop_assert!(r.deg() < g.deg());
            // Distributivity over XOR in the first argument.
            let lo = Polynomial(a & 0xffff_ffff).mulmod(Polynomial(b), g);
            let hi = Polynomial(a & !0xffff_ffff).mulmod(Polynomial(b), g);
            prop_assert_eq!(r, Polynomial(lo.0 ^ hi.0));
            // Reducing the operands first does not change the result.
            let r2 = Polynomial(a).modulo(g).mulmod(Polynomial(b).modulo(g), g);
            prop_assert_eq!(r, r2);
        }

        #[test]
        fn gcd_divides_both(a in 1u64.., b in 1u64..) {
            let g = Polynomial(a).gcd(Polynomial(b));
            prop_assert_eq!(Polynomial(a).modulo(g), Polynomial(0));
            prop_assert_eq!(Polynomial(b).modulo(g), Polynomial(0));
        }

        #[test]
        fn products_are_reducible(a in 2u64..(1 << 26), b in 2u64..(1 << 26)) {
            let prod = clmul(a, b) as u64;
            prop_assert!(!Polynomial(prod).is_irreducible());
        }
    }
}
