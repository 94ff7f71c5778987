// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

/// @title IRevenueVault — one asset's pull splitter, as the Marketplace and off-chain code see it
/// @notice Every payment for an asset is a plain token transfer into its vault; payees claim their
/// share of everything the vault ever received through `release`. Shares are out of TOTAL_SHARES.
interface IRevenueVault {
    // ---------------------------------------------------------------- errors

    /// @notice Payees and shares arrays differ in length, or are empty.
    /// @param payeeCount Length of the payees array.
    /// @param shareCount Length of the shares array.
    error InvalidPayees(uint256 payeeCount, uint256 shareCount);
    /// @notice A payee is the zero address.
    /// @param index Position of the zero payee in the payees array.
    error ZeroAddressPayee(uint256 index);
    /// @notice A payee was given a zero share of the vault.
    /// @param payee The payee whose share is zero.
    error ZeroPayeeShare(address payee);
    /// @notice The vault shares do not add up to TOTAL_SHARES.
    /// @param total Sum of the shares given.
    /// @param expected TOTAL_SHARES.
    error VaultSharesDoNotSum(uint256 total, uint256 expected);
    /// @notice `account` holds no share of this vault.
    /// @param account The address that is not a payee.
    error NotAPayee(address account);
    /// @notice `payee` has nothing to claim in `token` right now.
    /// @param token The ERC-20 asked for.
    /// @param payee The payee with nothing due.
    error NothingToRelease(address token, address payee);

    // ---------------------------------------------------------------- events

    /// @notice The vault was set up for `assetId` with `payeeCount` distinct payees.
    /// @param assetId The asset whose revenue the vault splits.
    /// @param marketplace The Marketplace that created and initialised the vault.
    /// @param payeeCount Number of distinct payees.
    event VaultInitialized(uint256 indexed assetId, address indexed marketplace, uint256 payeeCount);
    /// @notice `amount` of `token` was sent to `payee`.
    /// @param token The ERC-20 sent.
    /// @param payee Who received it.
    /// @param amount Token base units sent.
    event PaymentReleased(address indexed token, address indexed payee, uint256 amount);

    // ---------------------------------------------------------------- external

    /// @notice Sets payees and shares once (called by the Marketplace on the clone it creates). A
    /// payee listed twice gets the sum of its shares.
    /// @param assetId_ The asset whose revenue the vault splits.
    /// @param payees_ Payees (zero address refused).
    /// @param shares_ Each payee's share, out of TOTAL_SHARES; together exactly TOTAL_SHARES.
    function initialize(uint256 assetId_, address[] calldata payees_, uint256[] calldata shares_) external;

    /// @notice Sends `payee` everything it can claim in `token`. Callable by anyone.
    /// @param token The ERC-20 to release.
    /// @param payee The payee to pay.
    /// @return amount What was sent (token base units).
    function release(address token, address payee) external returns (uint256 amount);

    // ---------------------------------------------------------------- views

    /// @notice Denominator of every share.
    /// @return The share denominator (100,000,000).
    function TOTAL_SHARES() external view returns (uint256);

    /// @notice The asset whose revenue this vault splits.
    /// @return The asset id.
    function assetId() external view returns (uint256);

    /// @notice The Marketplace that created the vault.
    /// @return The Marketplace's address.
    function marketplace() external view returns (address);

    /// @notice Share of `payee`, out of TOTAL_SHARES (0 for a non-payee).
    /// @param payee The account asked about.
    /// @return shares Its share.
    function sharesOf(address payee) external view returns (uint256 shares);

    /// @notice Total of `token` sent out so far.
    /// @param token The ERC-20 asked about.
    /// @return amount Token base units released to all payees together.
    function totalReleased(address token) external view returns (uint256 amount);

    /// @notice Amount of `token` sent to `payee` so far.
    /// @param token The ERC-20 asked about.
    /// @param payee The payee asked about.
    /// @return amount Token base units released to it.
    function released(address token, address payee) external view returns (uint256 amount);

    /// @notice Distinct payees and their shares (out of TOTAL_SHARES), in order of first appearance.
    /// @return accounts The payees.
    /// @return shares Their shares.
    function payees() external view returns (address[] memory accounts, uint256[] memory shares);

    /// @notice Everything of `token` this vault has ever received.
    /// @param token The ERC-20 asked about.
    /// @return Balance plus everything released (token base units).
    function totalReceived(address token) external view returns (uint256);

    /// @notice What `payee` could be sent in `token` right now.
    /// @param token The ERC-20 asked about.
    /// @param payee The payee asked about.
    /// @return Token base units `release(token, payee)` would send.
    function claimable(address token, address payee) external view returns (uint256);
}
