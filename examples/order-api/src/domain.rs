//! Domain types: values that refuse to exist when they are wrong, and the
//! order arithmetic.
//!
//! Everything past the API edge works with these types, so a discount of 150 %
//! or a currency of `"usd"` cannot reach the service or the database even if a
//! check at the edge is forgotten.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most line items an order may hold.
pub const MAX_ITEMS: usize = 100;
/// Largest quantity of one line item.
pub const MAX_QUANTITY: u32 = 1000;
/// Largest unit price, in cents.
pub const MAX_UNIT_PRICE_CENTS: u64 = 100_000_000;
/// Longest customer id and SKU, in characters.
pub const MAX_ID_LEN: usize = 64;

/// Why a domain value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("must be an integer from 0 to 100")]
    Percent(i64),
    #[error("must be exactly 3 uppercase ASCII letters")]
    Currency,
    #[error("amount out of range")]
    Money,
    #[error("must be an integer from 1 to {MAX_QUANTITY}")]
    Quantity(i64),
    #[error("must be 1 to {MAX_ID_LEN} characters")]
    Identifier,
    #[error("an order needs 1 to {MAX_ITEMS} items")]
    ItemCount(usize),
}

/// A whole percentage, 0..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u8")]
pub struct Percent(u8);

impl Percent {
    pub fn new(value: i64) -> Result<Self, DomainError> {
        match u8::try_from(value) {
            Ok(v) if v <= 100 => Ok(Self(v)),
            _ => Err(DomainError::Percent(value)),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Percent {
    type Error = DomainError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Percent> for u8 {
    fn from(p: Percent) -> u8 {
        p.0
    }
}

/// An amount of money in cents (minor units), never negative.
///
/// Arithmetic is checked: an amount that would not fit is an error, never a
/// wrap or a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(u64);

impl Money {
    /// Largest amount accepted: what PostgreSQL's `BIGINT` can hold.
    pub const MAX: Money = Money(i64::MAX as u64);

    pub fn from_cents(cents: u64) -> Result<Self, DomainError> {
        if cents <= Self::MAX.0 {
            Ok(Self(cents))
        } else {
            Err(DomainError::Money)
        }
    }

    pub fn cents(self) -> u64 {
        self.0
    }

    /// `self * n`, or an error when it does not fit.
    pub fn times(self, n: u32) -> Result<Self, DomainError> {
        self.0
            .checked_mul(u64::from(n))
            .ok_or(DomainError::Money)
            .and_then(Self::from_cents)
    }

    pub fn plus(self, other: Self) -> Result<Self, DomainError> {
        self.0
            .checked_add(other.0)
            .ok_or(DomainError::Money)
            .and_then(Self::from_cents)
    }

    /// `self - self * percent / 100`, rounding the discount down (integer
    /// division), so a discount never exceeds the amount.
    pub fn discounted(self, percent: Percent) -> Self {
        // u128: `self * 100` cannot overflow, and the result is <= self.
        let discount = u128::from(self.0) * u128::from(percent.get()) / 100;
        Self(self.0 - discount as u64)
    }
}

/// An ISO 4217-shaped currency code: exactly three uppercase ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn new(code: &str) -> Result<Self, DomainError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(DomainError::Currency),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).expect("currency is ASCII")
    }
}

impl TryFrom<String> for Currency {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quantity of one line item, 1..=1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub fn new(value: i64) -> Result<Self, DomainError> {
        match u32::try_from(value) {
            Ok(v) if (1..=MAX_QUANTITY).contains(&v) => Ok(Self(v)),
            _ => Err(DomainError::Quantity(value)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = DomainError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

/// A customer id or a SKU: 1..=64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identifier(String);

impl Identifier {
    pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        if (1..=MAX_ID_LEN).contains(&value.chars().count()) {
            Ok(Self(value))
        } else {
            Err(DomainError::Identifier)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Identifier {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Identifier> for String {
    fn from(i: Identifier) -> String {
        i.0
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub sku: Identifier,
    pub quantity: Quantity,
    #[serde(rename = "unit_price_cents")]
    pub unit_price: Money,
}

impl LineItem {
    pub fn new(
        sku: Identifier,
        quantity: Quantity,
        unit_price_cents: u64,
    ) -> Result<Self, DomainError> {
        if unit_price_cents > MAX_UNIT_PRICE_CENTS {
            return Err(DomainError::Money);
        }
        Ok(Self {
            sku,
            quantity,
            unit_price: Money::from_cents(unit_price_cents)?,
        })
    }

    pub fn amount(&self) -> Result<Money, DomainError> {
        self.unit_price.times(self.quantity.get())
    }
}

/// An order as the caller asked for it, already valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub customer_id: Identifier,
    pub currency: Currency,
    pub items: Vec<LineItem>,
    pub discount: Percent,
}

impl NewOrder {
    pub fn new(
        customer_id: Identifier,
        currency: Currency,
        items: Vec<LineItem>,
        discount: Percent,
    ) -> Result<Self, DomainError> {
        if !(1..=MAX_ITEMS).contains(&items.len()) {
            return Err(DomainError::ItemCount(items.len()));
        }
        Ok(Self {
            customer_id,
            currency,
            items,
            discount,
        })
    }

    /// The sum of `quantity * unit_price` over the items.
    pub fn subtotal(&self) -> Result<Money, DomainError> {
        self.items
            .iter()
            .try_fold(Money::default(), |sum, item| sum.plus(item.amount()?))
    }

    /// `(subtotal, total)`: the total is the subtotal less the discount.
    pub fn totals(&self) -> Result<(Money, Money), DomainError> {
        let subtotal = self.subtotal()?;
        Ok((subtotal, subtotal.discounted(self.discount)))
    }
}

/// The state of a stored order. Only paid orders are stored: an order whose
/// payment failed is not an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Paid,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Paid => "paid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s == "paid").then_some(OrderStatus::Paid)
    }
}

/// A placed, paid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    /// The caller-scoped idempotency key the order was placed with; unique.
    pub idempotency_key: String,
    pub order: NewOrder,
    pub subtotal: Money,
    pub total: Money,
    pub payment_id: String,
    pub status: OrderStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(quantity: i64, price: u64) -> LineItem {
        LineItem::new(
            Identifier::new("sku").unwrap(),
            Quantity::new(quantity).unwrap(),
            price,
        )
        .unwrap()
    }

    fn order(items: Vec<LineItem>, discount: i64) -> NewOrder {
        NewOrder::new(
            Identifier::new("c").unwrap(),
            Currency::new("EUR").unwrap(),
            items,
            Percent::new(discount).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn values_refuse_bad_input() {
        assert!(Percent::new(101).is_err());
        assert!(Percent::new(-1).is_err());
        assert_eq!(Percent::new(100).unwrap().get(), 100);
        assert!(Currency::new("usd").is_err());
        assert!(Currency::new("EURO").is_err());
        assert!(Currency::new("ÉUR").is_err());
        assert_eq!(Currency::new("USD").unwrap().as_str(), "USD");
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(1001).is_err());
        assert!(Identifier::new("").is_err());
        assert!(Identifier::new("x".repeat(65)).is_err());
        assert!(Identifier::new("é".repeat(64)).is_ok());
        assert!(Money::from_cents(u64::MAX).is_err());
        assert!(
            LineItem::new(
                Identifier::new("s").unwrap(),
                Quantity::new(1).unwrap(),
                MAX_UNIT_PRICE_CENTS + 1
            )
            .is_err()
        );
    }

    #[test]
    fn totals_use_integer_division_of_the_discount() {
        let o = order(vec![item(3, 333), item(1, 1)], 15);
        // subtotal 1000; discount 1000*15/100 = 150
        assert_eq!(o.totals().unwrap(), (Money(1000), Money(850)));
        let o = order(vec![item(1, 999)], 33);
        // 999*33/100 = 329.67 -> 329
        assert_eq!(o.totals().unwrap(), (Money(999), Money(670)));
    }

    #[test]
    fn largest_order_does_not_overflow() {
        let items = (0..MAX_ITEMS)
            .map(|_| item(1000, MAX_UNIT_PRICE_CENTS))
            .collect();
        let (subtotal, total) = order(items, 1).totals().unwrap();
        assert_eq!(subtotal.cents(), 10_000_000_000_000);
        assert_eq!(total.cents(), 9_900_000_000_000);
    }
}
