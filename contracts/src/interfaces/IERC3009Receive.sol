// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

/// @title The EIP-3009 receive function in its `bytes signature` form
/// @notice What the Marketplace calls to take a buyer's signed payment: only the payee (the
/// Marketplace itself) can submit a `ReceiveWithAuthorization`, so nobody can front-run it.
interface IERC3009Receive {
    /// @notice Moves `value` from `from` to `to` (the caller) under `from`'s EIP-712 signature.
    /// @param from The payer, who signed.
    /// @param to The payee: must be the caller.
    /// @param value Token base units to move.
    /// @param validAfter The authorization is valid after this time (unix seconds).
    /// @param validBefore The authorization is valid before this time (unix seconds).
    /// @param nonce The payer's unique 32-byte nonce.
    /// @param signature The payer's EIP-712 signature (65 bytes, or ERC-1271 for a contract wallet).
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external;
}
